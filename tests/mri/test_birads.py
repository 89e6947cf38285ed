"""BI-RADS MRI descriptors: lexicon, encoding (ordinal/one-hot, synonyms, errors) and the simulated reader."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from usher2.io.errors import InputError
from usher2.mri.birads import (
    BIRADS_DESCRIPTORS,
    BIRADS_ORDINAL,
    birads_columns,
    encode_birads,
    phantom_descriptors,
)
from usher2.mri.phantom import MRIPhantomConfig, simulate_mri_labels


def _manifest(n: int, seed: int = 0) -> pd.DataFrame:
    df = simulate_mri_labels(n, seed=seed)
    df.insert(0, "case_id", [f"mri_{i:06d}" for i in range(n)])
    return df


def test_lexicon_is_declared() -> None:
    assert BIRADS_DESCRIPTORS["kinetic_curve"] == ("persistent", "plateau", "washout")
    assert BIRADS_DESCRIPTORS["shape"] == ("oval", "round", "irregular")
    assert BIRADS_ORDINAL <= set(BIRADS_DESCRIPTORS)
    assert "shape" not in BIRADS_ORDINAL and "margin" in BIRADS_ORDINAL
    for cats in BIRADS_DESCRIPTORS.values():
        assert len(set(cats)) == len(cats) >= 2
    cols = birads_columns()
    assert len(cols) == len(set(cols)) and cols[0] == "birads_lesion_type_mass"
    assert "birads_internal_enhancement_dark_internal_septations" in cols and "birads_kinetic_curve" in cols


def test_round_trip_every_category() -> None:
    # Every category of every descriptor, in a table long enough for the longest list.
    k = max(map(len, BIRADS_DESCRIPTORS.values()))
    table = pd.DataFrame({"case_id": [f"c{i}" for i in range(k)]})
    for d, cats in BIRADS_DESCRIPTORS.items():
        table[d] = [cats[i] if i < len(cats) else None for i in range(k)]
    enc = encode_birads(table)
    assert tuple(enc.columns) == ("case_id", *birads_columns())
    for d, cats in BIRADS_DESCRIPTORS.items():
        for i in range(k):
            if d in BIRADS_ORDINAL:
                got = enc.loc[i, f"birads_{d}"]
                assert (math.isnan(got) and i >= len(cats)) or got == i
            else:
                block = enc.loc[i, [c for c in enc.columns if c.startswith(f"birads_{d}_")]].to_numpy(float)
                if i < len(cats):
                    assert block.sum() == 1 and block[i] == 1
                else:
                    assert np.isnan(block).all()


def test_synonyms_case_and_column_aliases() -> None:
    table = pd.DataFrame(
        {
            "case_id": [1, 2, 3, 4],
            "Curve_Type": ["Type I", "type 2", "WASH-OUT", "Persistent"],
            "Edema": ["yes", "No", 1, 0.0],
            "Internal Enhancement": ["homogenous", "Ring", "rim_enhancement", "dark septations"],
            "margin": ["Not circumscribed", "smooth", " spiculated ", "indistinct"],
            "t2_signal": ["hypo", "ISO", "bright", ""],
            "other": ["x", "y", "z", "w"],
        }
    )
    enc = encode_birads(table)
    assert enc["birads_kinetic_curve"].tolist() == [0, 1, 2, 0]
    assert enc["birads_peritumoral_edema"].tolist() == [1, 0, 1, 0]
    assert enc["birads_margin"].tolist() == [1, 0, 2, 1]
    assert enc["birads_t2_signal"].tolist()[:3] == [0, 1, 2] and math.isnan(enc["birads_t2_signal"].iloc[3])
    assert enc["birads_internal_enhancement_homogeneous"].tolist() == [1, 0, 0, 0]
    assert enc["birads_internal_enhancement_rim_enhancement"].tolist() == [0, 1, 1, 0]
    assert enc["birads_internal_enhancement_dark_internal_septations"].tolist() == [0, 0, 0, 1]
    assert "other" not in enc and enc["case_id"].tolist() == [1, 2, 3, 4]
    only = encode_birads(table, descriptors=["curve_type"])
    assert list(only.columns) == ["case_id", "birads_kinetic_curve"]


def test_unknown_categories_and_bad_tables() -> None:
    table = pd.DataFrame({"case_id": ["a", "b"], "shape": ["oval", "Starry"]})
    with pytest.raises(InputError) as info:
        encode_birads(table)
    msg = str(info.value)
    for part in ("row 1", "'b'", "'shape'", "'Starry'", "oval, round, irregular"):
        assert part in msg
    with pytest.warns(UserWarning, match="Starry"):
        enc = encode_birads(table, strict=False)
    assert enc.loc[0, "birads_shape_oval"] == 1 and np.isnan(enc.loc[1, ["birads_shape_oval"]].to_numpy(float)).all()
    with pytest.raises(InputError, match="case_id"):
        encode_birads(table.drop(columns="case_id"))
    with pytest.raises(InputError, match="descriptor"):
        encode_birads(pd.DataFrame({"case_id": ["a"], "x": [1]}))
    with pytest.raises(InputError, match="margin"):
        encode_birads(table, descriptors=["margin"])
    with pytest.raises(InputError, match="two"):
        encode_birads(table.assign(mass_shape="oval"))
    with pytest.raises(InputError, match="descriptors"):
        encode_birads(table, descriptors=["colour"])


def test_reader_truth_and_determinism() -> None:
    m = _manifest(3000)
    exact = phantom_descriptors(m, seed=3, reader_error=0.0)
    enc = encode_birads(exact)
    np.testing.assert_array_equal(enc["birads_kinetic_curve"].to_numpy(), m["trait_curve_type"].to_numpy())
    np.testing.assert_array_equal(enc["birads_peritumoral_edema"].to_numpy(), (m["trait_edema_mm"] > 0).to_numpy())
    assert (exact.loc[m["trait_lobulation"] >= 0.6, "margin"] == "spiculated").all()
    assert set(exact["shape"]) == {"oval", "irregular"} and set(exact["t2_signal"]) == {"isointense"}
    # Nodes follow grade and size.
    nodes = enc["birads_axillary_lymph_nodes"].to_numpy()
    assert nodes[m["grade"] == 3].mean() > nodes[m["grade"] == 1].mean() + 0.15
    pd.testing.assert_frame_equal(phantom_descriptors(m, seed=3), phantom_descriptors(m, seed=3))
    assert not phantom_descriptors(m, seed=3).equals(phantom_descriptors(m, seed=4))
    # The truth does not depend on reader_error: only flipped cells differ.
    noisy = phantom_descriptors(m, seed=3, reader_error=0.15)
    cells = noisy.drop(columns="case_id").to_numpy() != exact.drop(columns="case_id").to_numpy()
    p, n = 0.15, cells.size
    assert abs(cells.mean() - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert encode_birads(noisy).notna().all().all()  # every misread is still a lexicon category


def test_reader_rejects_bad_input() -> None:
    m = _manifest(10)
    with pytest.raises(ValueError, match="reader_error"):
        phantom_descriptors(m, reader_error=1.0)
    with pytest.raises(InputError, match="trait_curve_type"):
        phantom_descriptors(m.drop(columns="trait_curve_type"))
    prostate = simulate_mri_labels(10, 0, MRIPhantomConfig(anatomy="prostate")).assign(case_id="x")
    with pytest.raises(InputError, match="breast"):
        phantom_descriptors(prostate)
