"""The layering of usher2 (issue 24), checked over the import graph with imports inside functions.

The layers and the scan live in ``bench/architecture.py`` (which also prints the graph); this test
holds the package to them: no module imports from a layer above its own, the fusion core imports
nothing from explain/report/score/service/pipeline, no package imports another's private name, and
no function outside the phantom and simulator renderers is over 100 lines.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def arch():
    spec = importlib.util.spec_from_file_location("usher2_architecture", ROOT / "bench" / "architecture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scan(arch):
    return arch.scan(ROOT / "usher2")


def test_every_module_has_a_layer(arch):
    for path in sorted((ROOT / "usher2").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        arch.layer_of(module)  # raises for a module outside every layer


def test_no_import_reaches_a_layer_above(scan):
    assert scan["upward"] == [], "\n".join(f"{u['file']}:{u['line']} imports {u['import']}" for u in scan["upward"])


def test_fusion_imports_no_later_stage(arch, scan):
    later = arch.FORBIDDEN["fusion"]
    bad = {(f, t): n for (f, t, _), n in scan["edges"].items() if f == "fusion" and t in later}
    assert bad == {}


def test_no_private_name_crosses_a_package(scan):
    assert scan["private"] == [], "\n".join(f"{p['file']}:{p['line']} {p['import']}" for p in scan["private"])


def test_no_function_over_100_lines_outside_the_phantom_and_simulator(arch, scan):
    # issue 24: long functions are split along their steps; the two renderers are exempt
    long = [f for f in scan["functions"] if f["lines"] > 100 and not f["file"].startswith(arch.EXEMPT_LONG)]
    assert long == [], "\n".join(f"{f['file']}:{f['line']} {f['function']} ({f['lines']} lines)" for f in long)


def test_the_check_sees_imports_inside_functions(arch, tmp_path):
    # a planted upward import inside a function body must be found, with its line
    pkg = tmp_path / "usher2"
    (pkg / "fusion").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "fusion" / "__init__.py").write_text("")
    (pkg / "score").mkdir()
    (pkg / "score" / "__init__.py").write_text("")
    (pkg / "fusion" / "fit.py").write_text("def f():\n    from usher2.score import _engine\n")
    s = arch.scan(pkg)
    assert [(u["file"], u["line"], u["import"]) for u in s["upward"]] == [("usher2/fusion/fit.py", 2, "usher2.score")]
    assert [p["import"] for p in s["private"]] == ["usher2.score._engine"]
    assert s["edges"][("fusion", "score", "local")] == 1
