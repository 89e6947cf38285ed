"""Net benefit against R dcurves (df_binary, famhistory) row by row, plus hand-computed cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from usher2.evaluate.dca import net_benefit
from usher2.io.errors import InputError

REPO = Path(__file__).resolve().parents[2]
VENDORED = REPO / "tests" / "data" / "reference" / "stats"
SHARED = REPO.parent / "shared" / "reference" / "stats"
FILES = ["dcurves_df_binary.csv", "dcurves_r_case1_results.csv", "dcurves_LICENSE.txt"]


@pytest.fixture(scope="module")
def dcurves():
    data = pd.read_csv(VENDORED / "dcurves_df_binary.csv")
    ref = pd.read_csv(VENDORED / "dcurves_r_case1_results.csv")
    return data, ref


def test_readme_values_for_famhistory(dcurves):
    data, _ = dcurves
    nb = net_benefit(data["cancer"].astype(int), data["famhistory"], [0.05, 0.10, 0.15, 0.20], names="famhistory")
    fam = nb[nb["label"] == "famhistory"]["net_benefit"].to_numpy()
    expected = [0.025614035087719297, 0.018518518518518517, 0.010588235294117645, 0.0016666666666666635]
    assert fam == pytest.approx(expected, abs=1e-9)
    all_10 = nb[(nb["label"] == "Treat All") & (nb["threshold"] == 0.10)]["net_benefit"].item()
    assert all_10 == pytest.approx(0.04444444444444445, abs=1e-9)


def test_every_r_row_inside_0_1_matches(dcurves):
    data, ref = dcurves
    ref = ref[(ref["threshold"] > 0) & (ref["threshold"] < 1)]  # threshold 0 is outside (0, 1): refused here
    assert len(ref) == 297
    nb = net_benefit(data["cancer"].astype(int), {"famhistory": data["famhistory"]}, ref["threshold"].unique())
    m = ref.merge(nb, on=["label", "threshold"], suffixes=("_r", ""), validate="one_to_one")
    assert len(m) == 297 and set(m["label"]) == {"famhistory", "Treat All", "Treat None"}
    for col in ("net_benefit", "tp_rate", "fp_rate", "test_pos_rate"):
        assert np.abs(m[f"{col}_r"] - m[col]).max() < 1e-9, col
    assert (m["n_r"] == m["n"]).all() and (m["n"] == 750).all()


def test_hand_example_several_models():
    y = [0, 0, 0, 1, 1, 0]
    risk = pd.DataFrame({"a": [0.1, 0.2, 0.5, 0.6, 0.3, 0.05], "b": [0.3, 0.3, 0.3, 0.9, 0.9, 0.3]})
    nb = net_benefit(y, risk, [0.3, 0.5]).set_index(["label", "threshold"])["net_benefit"]
    # a at 0.3: TP 2 (0.6, 0.3), FP 1 (0.5): 2/6 - 1/6 * 3/7; at 0.5: TP 1, FP 1: 1/6 - 1/6 * 1
    assert nb[("a", 0.3)] == pytest.approx(2 / 6 - 1 / 6 * 3 / 7, abs=1e-15)
    assert nb[("a", 0.5)] == pytest.approx(0.0, abs=1e-15)
    # b at 0.3: everyone positive (0.3 >= 0.3) = treat all; at 0.5: TP 2, FP 0
    assert nb[("b", 0.3)] == pytest.approx(nb[("Treat All", 0.3)], abs=1e-15)
    assert nb[("Treat All", 0.3)] == pytest.approx(2 / 6 - 4 / 6 * 3 / 7, abs=1e-15)
    assert nb[("b", 0.5)] == pytest.approx(2 / 6, abs=1e-15)
    assert nb[("Treat None", 0.5)] == 0.0


@pytest.mark.parametrize(
    ("risk", "thresholds", "field", "words"),
    [
        ([0.1, 0.2, 0.3, 0.4], [0.0, 0.2], "thresholds", "strictly between 0 and 1"),
        ([0.1, 0.2, 0.3, 0.4], [0.2, 1.0], "thresholds", "strictly between 0 and 1"),
        ([0.1, np.nan, 0.3, 0.4], [0.2], "model", "NaN"),
        ([0.3, 0.3, 0.3, 0.3], [0.2], "model", "vary"),
        ([0.1, 0.2, 1.5, 0.4], [0.2], "model", "between 0 and 1"),
        ({"Treat All": [0.1, 0.2, 0.3, 0.4]}, [0.2], "risk", "distinct model names"),
    ],
)
def test_bad_input_names_the_field(risk, thresholds, field, words):
    with pytest.raises(InputError, match=words) as e:
        net_benefit([0, 0, 1, 1], risk, thresholds)
    assert e.value.where == field


def test_single_class_is_refused():
    with pytest.raises(InputError, match="both classes") as e:
        net_benefit([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], [0.2])
    assert e.value.where == "y"


@pytest.mark.parametrize("name", FILES)
def test_vendored_reference_files_match_shared(name):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: cannot compare the vendored copies with the shared originals")
    assert (VENDORED / name).read_bytes() == (SHARED / name).read_bytes()
