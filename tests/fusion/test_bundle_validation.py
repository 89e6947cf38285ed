"""Bundles that pass the hash and type checks but carry bad data are refused at load, before any
prediction; every model usher2 fits loads cleanly; bundle files are checked; optional signing."""

from __future__ import annotations

import copy
import hashlib
import hmac
import io
import json
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.calibration import CalibratedClassifierCV

from usher2.fusion.bundle import BUNDLE_FILES, HASHES, SIGNATURE, load_bundle, read_key, save_bundle, sign_bundle
from usher2.fusion.models import CLASSIFIERS, build_model, family_columns
from usher2.fusion.validate import check_lightgbm_model, check_tree_links, check_xgboost_model
from usher2.io.errors import InputError
from usher2.io.hashing import file_sha256

sys.path.insert(0, str(Path(__file__).parent))
from test_models import _data

KEY = b"0123456789abcdef0123456789abcdef"
SMALL = {"rf": 8, "xgboost": 10, "lightgbm": 10}  # trees: enough to have splits, quick to fit


# ------------------------------------------------------------------------------------ helpers
def fit_model(
    classifier: str = "lr",
    family: str = "combined",
    *,
    fusion: str = "early",
    calibration: str | None = None,
    n: int = 80,
) -> tuple[Any, pd.DataFrame, np.ndarray]:
    """A fitted model of a family on the synthetic table of ``test_models`` and its input rows."""
    X, y = _data(n)
    cols = family_columns(X.columns, family, clinical=["age"] if family in ("clinical", "combined") else [])
    X = X[cols["radiomics"] + cols["deep"] + cols["clinical"]]  # what usher2 fit feeds a family's model
    model, grid = build_model(cols, classifier, fusion=fusion)
    model.set_params(**{k: v[0] for k, v in grid.items()})
    if classifier in SMALL and fusion == "early":
        model.set_params(classifier__n_estimators=SMALL[classifier])
    if calibration:
        model = CalibratedClassifierCV(model, method=calibration, cv=2, ensemble=False)
    return model.fit(X, y), X, y


def save(path: Path, model: Any, X: pd.DataFrame, **kwargs: Any) -> Path:
    oof = pd.DataFrame({"probability": np.full(len(X), 0.5)}, index=pd.Index(X.index, name="case_id"))
    return save_bundle(path, model, {"columns": list(X.columns), "threshold": 0.5}, {"auc": 0.5}, oof, **kwargs)


def rehash(path: Path) -> None:
    """Rewrite hashes.json for the files as they are: what anyone who can write the folder can do."""
    (path / HASHES).write_text(json.dumps({name: file_sha256(path / name) for name in BUNDLE_FILES}))


def replace_model(path: Path, model: Any) -> Path:
    sio.dump(model, path / "model.skops")
    rehash(path)
    return path


def edit_tree(tree: Any, field: str, index: int, value: Any) -> None:
    """Set one field of one node of a fitted scikit-learn Tree (as a crafted file would hold it)."""
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    nodes[field][index] = value
    state["nodes"] = nodes
    tree.__setstate__(state)


def crafted_tree_bundle(path: Path, field: str = "left_child", value: Any = 2**40) -> Path:
    """The issue's bundle: a random forest whose first tree's root has ``field`` = ``value``
    (a child index of 2**40 by default), with hashes.json updated to match."""
    model, X, _ = fit_model("rf")
    save(path, model, X)
    bad = copy.deepcopy(model)
    edit_tree(bad.named_steps["classifier"].estimators_[0].tree_, field, 0, value)
    return replace_model(path, bad)


def _rewrite_member(path: Path, name: str, data: bytes) -> None:
    """Replace one member of model.skops (a zip) and rehash the bundle."""
    f = path / "model.skops"
    with zipfile.ZipFile(f) as z:
        members = {n: (data if n == name else z.read(n)) for n in z.namelist()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    f.write_bytes(buf.getvalue())
    rehash(path)


def _booster_node(path: Path, module: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema, the booster's state node) in model.skops."""
    with zipfile.ZipFile(path / "model.skops") as z:
        schema = json.loads(z.read("schema.json"))
    todo = [schema]
    while todo:
        n = todo.pop()
        if isinstance(n, dict):
            if n.get("__module__") == module and n.get("__class__") == "Booster" and "content" in n:
                return schema, n["content"]["content"]
            todo += list(n.values())
        elif isinstance(n, list):
            todo += n
    raise AssertionError(f"no {module} Booster in the bundle")


def ubjson(v: Any) -> bytes:
    """Universal Binary JSON of a JSON value (what XGBoost reads back from a pickled booster)."""
    if v is None or isinstance(v, bool):
        return {None: b"Z", True: b"T", False: b"F"}[v]
    if isinstance(v, int):
        return b"L" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"D" + struct.pack(">d", v)
    if isinstance(v, str):
        return b"SL" + struct.pack(">q", len(v.encode())) + v.encode()
    if isinstance(v, list):
        return b"[" + b"".join(ubjson(x) for x in v) + b"]"
    key = lambda k: b"L" + struct.pack(">q", len(k.encode())) + k.encode()  # noqa: E731
    return b"{" + b"".join(key(k) + ubjson(x) for k, x in v.items()) + b"}"


# ------------------------------------------------------------- every fitted model loads cleanly
@pytest.mark.parametrize(
    ("classifier", "family", "fusion", "calibration"),
    [(c, "combined", "early", "sigmoid") for c in CLASSIFIERS]
    + [
        ("lr", "combined", "early", "isotonic"),
        ("lr", "combined", "early", None),
        ("rf", "radiomics", "early", None),
        ("xgboost", "deep", "early", None),
        ("lightgbm", "dlr", "early", None),
        ("lr", "clinical", "early", None),
        ("lr", "combined", "late", "sigmoid"),
        ("lr", "dlr", "late", None),
    ],
)
def test_every_model_usher2_fits_validates_and_round_trips(tmp_path, classifier, family, fusion, calibration):
    model, X, _ = fit_model(classifier, family, fusion=fusion, calibration=calibration)
    b = load_bundle(save(tmp_path / "b", model, X))
    np.testing.assert_array_equal(b.model.predict_proba(X)[:, 1], model.predict_proba(X)[:, 1])  # the round trip
    # the bundle predicts through the compiled form (usher2.fusion.compiled): the same float64 arithmetic in
    # another summation order, a few ulps (measured <= 1.1e-16 here, 2.6e-15 for the SVM kernel sums)
    np.testing.assert_allclose(b.predict_proba(X), model.predict_proba(X)[:, 1], rtol=0, atol=1e-12)
    assert b.compiled.compiled and b.verified is False


# ----------------------------------------------------------------- crafted scikit-learn models
def test_the_issue_bundle_a_tree_child_of_2_to_the_40_is_refused_at_load(tmp_path):
    path = crafted_tree_bundle(tmp_path / "b")
    with pytest.raises(InputError) as err:
        load_bundle(path)  # before the validator this loaded, and its first predict_proba segfaulted
    msg = str(err.value)
    assert "model.skops" in msg and "estimators_[0] (DecisionTreeClassifier)" in msg
    assert "tree_.children_left[0]" in msg and "1099511627776" in msg


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("feature", 99, r"tree_\.feature\[0\]: expected a feature index in \[0, \d+\), got 99"),
        ("threshold", np.nan, r"tree_\.threshold\[0\]: expected a finite split threshold, got nan"),
        ("left_child", 0, r"children_left\[0\]: expected -1 or a node index in \[1, "),  # a cycle: a hang
        ("right_child", -1, r"children_right\[0\]: expected -1 or a node index in \[1, \d+\), got -1"),
    ],
)
def test_bad_tree_fields_are_named(tmp_path, field, value, message):
    path = crafted_tree_bundle(tmp_path / "b", field, value)
    with pytest.raises(InputError, match=message):
        load_bundle(path)


def test_a_shared_child_is_refused():
    # node 1 is both children of the root: following children still ends, but it is no tree
    with pytest.raises(InputError, match=r"t\.right\[0\]: expected a node that no other node points to, got 1"):
        check_tree_links("t", [1, -1, -1], [1, -1, -1], 3, ("left", "right"))
    assert check_tree_links("t", [1, 3, -1, -1, -1], [2, 4, -1, -1, -1], 5, ("l", "r")).tolist() == [
        True,
        True,
        False,
        False,
        False,
    ]


def test_bad_linear_coefficients_are_refused(tmp_path):
    model, X, _ = fit_model("lr")
    path = save(tmp_path / "b", model, X)
    lr = model.named_steps["classifier"]
    width = lr.coef_.shape[1]
    bad = copy.deepcopy(model)
    bad.named_steps["classifier"].coef_ = np.zeros((1, width + 3))
    with pytest.raises(
        InputError, match=rf"steps\['classifier'\] \(LogisticRegression\): coef_: expected shape \(1, {width}\)"
    ):
        load_bundle(replace_model(path, bad))
    bad.named_steps["classifier"].coef_ = np.full((1, width), np.inf)
    with pytest.raises(InputError, match=r"coef_\[0, 0\]: expected a finite number, got inf"):
        load_bundle(replace_model(path, bad))


def test_a_scaler_with_zero_scale_and_a_wrong_column_list_are_refused(tmp_path):
    model, X, _ = fit_model("lr")
    path = save(tmp_path / "b", model, X)
    bad = copy.deepcopy(model)
    imaging = bad.named_steps["select"].named_transformers_["imaging"]
    imaging.named_steps["scale"].scale_[2] = 0.0
    with pytest.raises(
        InputError, match=r"transformers_\['imaging'\]\.steps\['scale'\] \(StandardScaler\): scale_\[2\]"
    ):
        load_bundle(replace_model(path, bad))
    # the column list in config.json must be the model's input columns, in order
    replace_model(path, model)
    cfg = json.loads((path / "config.json").read_text())
    cfg["columns"] = cfg["columns"][::-1]
    (path / "config.json").write_text(json.dumps(cfg))
    rehash(path)
    with pytest.raises(InputError, match=r"feature_names_in_: expected the bundle's columns in config\.json, in order"):
        load_bundle(path)
    cfg["columns"] = cfg["columns"][1:]
    (path / "config.json").write_text(json.dumps(cfg))
    rehash(path)
    with pytest.raises(InputError, match=rf"n_features_in_: expected {X.shape[1] - 1} \(the bundle's columns"):
        load_bundle(path)


def test_an_estimator_type_usher2_does_not_fit_is_refused_even_if_skops_trusts_it(tmp_path):
    from sklearn.neighbors import KNeighborsClassifier

    model, X, y = fit_model("lr")
    path = save(tmp_path / "b", model, X)
    knn = KNeighborsClassifier(3, algorithm="brute").fit(X.to_numpy(), y)  # skops trusts it by default
    with pytest.raises(InputError, match=r"an estimator type usher2 fits.*KNeighborsClassifier"):
        load_bundle(replace_model(path, knn))


# ------------------------------------------------------------------------- crafted boosters
def test_a_crafted_xgboost_tree_is_refused_before_xgboost_builds_it(tmp_path):
    import xgboost

    model, X, _ = fit_model("xgboost")
    path = save(tmp_path / "b", model, X)
    clf = copy.deepcopy(model)
    doc = json.loads(bytes(clf.named_steps["classifier"].get_booster().save_raw("json")))
    doc["learner"]["gradient_booster"]["model"]["trees"][0]["left_children"][0] = 1000  # segfaults predict
    bad = xgboost.Booster()
    bad.load_model(bytearray(json.dumps(doc).encode()))
    clf.named_steps["classifier"]._Booster = bad
    with pytest.raises(
        InputError, match=r"trees\[0\]\.left_children\[0\]: expected -1 or a node index in \[1, \d+\), got 1000"
    ):
        load_bundle(replace_model(path, clf))


def test_an_xgboost_model_that_crashes_the_loader_itself_is_refused_unbuilt(tmp_path):
    from xgboost import Booster

    model, X, _ = fit_model("xgboost")
    path = save(tmp_path / "b", model, X)
    booster = model.named_steps["classifier"].get_booster()
    doc = {"Config": json.loads(booster.save_config()), "Model": json.loads(bytes(booster.save_raw("json")))}
    # the re-encoded document is what XGBoost reads: unchanged, it loads and predicts the same
    again = Booster.__new__(Booster)
    again.__setstate__({"handle": bytearray(ubjson(doc))})
    width = model.named_steps["classifier"].n_features_in_
    assert again.num_features() == width and check_xgboost_model(doc) == width
    # size_leaf_vector 3 segfaults XGBoost's loader (xgboost 3.2), so skops must never build it
    doc["Model"]["learner"]["gradient_booster"]["model"]["trees"][1]["tree_param"]["size_leaf_vector"] = "3"
    _, state = _booster_node(path, "xgboost.core")
    _rewrite_member(path, state["handle"]["file"], ubjson(doc))
    with pytest.raises(InputError, match=r"trees\[1\]\.size_leaf_vector: expected an integer in \[0, 1\], got 3"):
        load_bundle(path)
    doc["Model"]["learner"]["gradient_booster"]["model"]["trees"][1]["tree_param"]["size_leaf_vector"] = "1"
    doc["Model"]["learner"]["gradient_booster"]["model"]["tree_info"][0] = 5  # a tree group past num_class
    with pytest.raises(InputError, match=r"tree_info\[0\]: expected tree group 0 \(one output\), got 5"):
        check_xgboost_model(doc)


def _lgb_tree_line(text: str, key: str, new: str) -> str:
    """``text`` with the first tree's ``key=`` line set to ``new``."""
    head, tree0 = text.split("\nTree=0\n", 1)
    lines = tree0.split("\n")
    i = next(i for i, line in enumerate(lines) if line.startswith(f"{key}="))
    lines[i] = f"{key}={new}"
    return head + "\nTree=0\n" + "\n".join(lines)


def test_a_crafted_lightgbm_model_is_refused_before_lightgbm_builds_it(tmp_path):
    model, X, _ = fit_model("lightgbm")
    path = save(tmp_path / "b", model, X)
    schema, state = _booster_node(path, "lightgbm.basic")
    text = json.loads(state["_handle"]["content"])
    width = model.named_steps["classifier"].n_features_in_
    assert check_lightgbm_model(text) == width
    left = next(line for line in text.split("\n") if line.startswith("left_child=")).split("=")[1].split(" ")
    cycle = " ".join(["0", *left[1:]])  # the root as its own child: LightGBM's predict loops forever
    state["_handle"]["content"] = json.dumps(_lgb_tree_line(text, "left_child", cycle))
    _rewrite_member(path, "schema.json", json.dumps(schema).encode())
    with pytest.raises(InputError, match=r"tree 0\.left_child\[0\]: expected an inner node in \[1, \d+\)"):
        load_bundle(path)
    # a leaf value whose text is longer than tree_sizes says: LightGBM would read from a wrong offset
    values = next(line for line in text.split("\n") if line.startswith("leaf_value=")).split("=")[1].split(" ")
    longer = _lgb_tree_line(text, "leaf_value", " ".join([values[0] + "0", *values[1:]]))
    with pytest.raises(InputError, match=r"tree_sizes: expected the trees' text lengths"):
        check_lightgbm_model(longer)
    feature = _lgb_tree_line(text, "split_feature", " ".join(["100000"] + ["0"] * (len(left) - 1)))
    with pytest.raises(InputError, match=rf"tree 0\.split_feature\[0\]: expected a feature index in \[0, {width}\)"):
        check_lightgbm_model(feature)


# ---------------------------------------------------------------------------- bundle files
@pytest.fixture(scope="module")
def lr_model():
    return fit_model("lr")


def test_hashes_json_that_is_not_an_object_is_one_line_naming_the_file(tmp_path, lr_model):
    model, X, _ = lr_model
    path = save(tmp_path / "b", model, X)
    (path / HASHES).write_text("[]")
    with pytest.raises(
        InputError, match=r"hashes\.json: expected a JSON object \{file name: SHA-256\}, got a JSON list"
    ):
        load_bundle(path)


def test_a_traversal_name_in_hashes_json_is_refused_and_never_opened(tmp_path, lr_model, monkeypatch):
    model, X, _ = lr_model
    path = save(tmp_path / "b", model, X)
    hashes = json.loads((path / HASHES).read_text())
    hashes["../../etc/passwd"] = "0" * 64
    (path / HASHES).write_text(json.dumps(hashes))
    opened: list[str] = []
    read_bytes, open_ = Path.read_bytes, Path.open
    monkeypatch.setattr(Path, "read_bytes", lambda self: opened.append(str(self)) or read_bytes(self))
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: opened.append(str(self)) or open_(self, *a, **k))
    with pytest.raises(
        InputError, match=r"hashes\.json: expected hashes of exactly .*, got other names \['\.\./\.\./etc/passwd'\]"
    ):
        load_bundle(path)
    assert str(path / HASHES) in opened and not any("passwd" in p for p in opened)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "config.json",
            "{not json",
            r"config\.json: expected the bundle's settings \(a JSON object\), got invalid JSON",
        ),
        ("config.json", "[1, 2]", r"config\.json: expected the bundle's settings \(a JSON object\), got a JSON list"),
        ("metrics.json", "{", r"metrics\.json: expected the bundle's metrics \(a JSON object\), got invalid JSON"),
        ("metrics.json", '"auc"', r"metrics\.json: expected the bundle's metrics \(a JSON object\), got a JSON str"),
    ],
)
def test_invalid_json_files_are_named(tmp_path, lr_model, name, content, message):
    model, X, _ = lr_model
    path = save(tmp_path / "b", model, X)
    (path / name).write_text(content)
    rehash(path)
    with pytest.raises(InputError, match=message):
        load_bundle(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"columns": None}, r"config\.json: columns: expected a non-empty list of column names, got None"),
        ({"threshold": None}, r"config\.json: threshold: expected a decision threshold in \[0, 1\], got None"),
        ({"threshold": 1.5}, r"threshold: expected a decision threshold in \[0, 1\], got 1\.5"),
        ({"threshold": float("nan")}, r"threshold: expected a decision threshold in \[0, 1\], got nan"),
        ({"threshold": True}, r"threshold: expected a decision threshold in \[0, 1\], got True"),
    ],
)
def test_config_settings_are_checked(tmp_path, lr_model, change, message):
    model, X, _ = lr_model
    path = save(tmp_path / "b", model, X)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(change)
    cfg = {k: v for k, v in cfg.items() if not (k in change and v is None)}  # None: the field removed
    (path / "config.json").write_text(json.dumps(cfg))
    rehash(path)
    with pytest.raises(InputError, match=message):
        load_bundle(path)


# ---------------------------------------------------------------------------------- signing
def test_a_signed_bundle_round_trips_and_the_signature_is_the_hmac_of_hashes_json(tmp_path, lr_model):
    model, X, _ = lr_model
    path = save(tmp_path / "b", model, X, sign_key=KEY)
    doc = json.loads((path / SIGNATURE).read_text())
    expected = hmac.new(KEY, (path / HASHES).read_bytes(), hashlib.sha256).hexdigest()
    assert doc == {"algorithm": "hmac-sha256", "signature": expected}
    b = load_bundle(path, verify_key=KEY)
    assert b.verified is True
    np.testing.assert_array_equal(b.predict_proba(X), model.predict_proba(X)[:, 1])
    assert load_bundle(path).verified is False  # without a key the signature is not looked at


def test_wrong_key_missing_signature_and_rewritten_hashes_are_refused(tmp_path, lr_model):
    model, X, _ = lr_model
    path = save(tmp_path / "b", model, X, sign_key=KEY)
    with pytest.raises(InputError, match=r"hashes\.json: expected the file the signature was made over"):
        load_bundle(path, verify_key=b"another key of 32 bytes, not KEY")
    # whoever can write the folder can change a file and rewrite hashes.json: the hashes pass...
    cfg = json.loads((path / "config.json").read_text())
    cfg["threshold"] = 0.01
    (path / "config.json").write_text(json.dumps(cfg))
    rehash(path)
    assert load_bundle(path).threshold == 0.01
    # ...but not the signature, made over the old hashes.json with a key they do not have
    with pytest.raises(InputError, match="changed after signing"):
        load_bundle(path, verify_key=KEY)
    (path / SIGNATURE).unlink()
    with pytest.raises(InputError, match=r"signature\.json: expected the bundle's signature \(hmac-sha256"):
        load_bundle(path, verify_key=KEY)


def test_sign_bundle_signs_an_intact_bundle_and_refuses_a_changed_one(tmp_path, lr_model):
    model, X, _ = lr_model
    path = save(tmp_path / "b", model, X)
    assert sign_bundle(path, KEY) == path / SIGNATURE
    assert load_bundle(path, verify_key=KEY).verified
    (path / "oof.csv").write_text("case_id,probability\nc0,0.9\n")
    with pytest.raises(InputError, match="tampered"):
        sign_bundle(path, KEY)


def test_read_key(tmp_path):
    (tmp_path / "k").write_text(KEY.decode() + "\n")
    assert read_key(tmp_path / "k") == KEY
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(InputError, match=r"short: expected a key of at least 16 bytes, got 3 bytes"):
        read_key(tmp_path / "short")
    with pytest.raises(InputError, match="no such file"):
        read_key(tmp_path / "none")
