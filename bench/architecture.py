"""Issue 24's structural measures: the package import graph, layering breaks and long functions.

Usage:
    python bench/architecture.py [--root usher2] [--max-lines 100] [--json FILE]

Reads the source with :mod:`ast` (nothing is imported or run) and prints:

* **Import graph** between usher2's sub-packages (``usher2.fusion`` -> ``usher2.explain``: how
  many import statements), module-level and function-local ones counted apart: an import inside
  a function hides a layer crossing from a reader of the module's header.
* **Layering breaks** against issue 24's target: ``fusion`` imports nothing from ``explain``,
  ``report``, ``score``, ``service`` or ``pipeline``; no package imports a private name (``_x``)
  of another package; no module imports from a layer above its own (:data:`LAYERS`).
  ``tests/test_architecture.py`` holds the package to all three. The deprecated alias modules
  (:data:`DEPRECATED_ALIASES`) are left out of the graph.
* **Long functions**: every function or method over ``--max-lines`` lines (the target: none outside
  the MRI phantom and the simulator renderers), longest first.

Run it before and after a restructuring and compare the printed tables.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
from collections import Counter
from pathlib import Path
from typing import Any

FORBIDDEN = {"fusion": {"explain", "report", "score", "service", "pipeline"}}
EXEMPT_LONG = ("usher2/mri/phantom.py", "usher2/simulate/")

#: The layers, top first: a module may import from its own layer and the layers below it, never
#: from one above (imports inside functions included). Entries are sub-packages or modules
#: (``evaluate.nomogram`` reads fitted fusion models, so it sits above ``fusion`` while the rest of
#: ``evaluate``, the statistics every stage uses, sits below it; the package's ``__init__``
#: re-exports the nomogram too, so it sits with it). The root ``usher2`` (its ``__version__``) may
#: be imported from anywhere.
LAYERS = (
    ("cli",),
    ("service", "mri"),
    ("pipeline",),
    ("score",),
    ("report",),
    ("explain",),
    ("evaluate.nomogram", "evaluate.__init__"),
    ("fusion",),
    ("features",),
    ("segment",),
    ("enhance",),
    ("simulate",),
    ("evaluate",),
    ("io", "types", "registry", "training", "weights", "tracking", "inference"),
)
#: Modules kept only as deprecated aliases of moved ones (one release): they import their new home.
DEPRECATED_ALIASES = ("usher2.fusion.scorer", "usher2.fusion.score", "usher2.fusion.score_frames")


def layer_of(module: str, root: str = "usher2") -> int | None:
    """The index in :data:`LAYERS` of ``usher2.x.y`` (the longest matching entry); None for the root."""
    parts = module.split(".")
    if parts[0] != root or len(parts) == 1 or parts[1] == "__init__":
        return None
    rel = ".".join(parts[1:])
    best: tuple[int, int] | None = None
    for i, layer in enumerate(LAYERS):
        for entry in layer:
            if rel == entry or rel.startswith(entry + "."):
                if best is None or len(entry) > best[1]:
                    best = (i, len(entry))
    if best is None:
        raise ValueError(f"{module} is in no layer of LAYERS: add its sub-package")
    return best[0]


def _package(module: str, root: str) -> str | None:
    """``usher2.fusion.fit`` -> ``fusion``; ``usher2.cli`` -> ``cli``; other roots -> None."""
    parts = module.split(".")
    if parts[0] != root:
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _resolve(node: ast.ImportFrom, module: str) -> str:
    """The absolute module of a (possibly relative) ``from ... import``."""
    if not node.level:
        return node.module or ""
    base = module.split(".")[: -node.level]
    return ".".join(base + ([node.module] if node.module else []))


def scan(root: Path) -> dict[str, Any]:
    name = root.name
    edges: Counter[tuple[str, str, str]] = Counter()  # (from, to, "module"|"local")
    private: list[dict[str, Any]] = []
    upward: list[dict[str, Any]] = []
    long_functions: list[dict[str, Any]] = []
    n_imports = Counter()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        module = ".".join(rel.with_suffix("").parts)
        if module.endswith(".__init__"):
            module = module[: -len(".__init__")] + ".__init__"
        src_pkg = _package(module, name)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        local_nodes = set()
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(fn):
                    if isinstance(inner, ast.Import | ast.ImportFrom):
                        local_nodes.add(id(inner))
                lines = (fn.end_lineno or fn.lineno) - fn.lineno + 1
                long_functions.append({"file": str(rel), "function": fn.name, "line": fn.lineno, "lines": lines})
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = _resolve(node, module)
                targets = [(mod, a.name) for a in node.names]
            else:
                continue
            where = "local" if id(node) in local_nodes else "module"
            shim = module in DEPRECATED_ALIASES
            if any(_package(mod, name) is not None for mod, _ in targets):
                n_imports[where] += 1  # import statements, as issue 24 counts them
            for mod, imported in targets:
                dst_pkg = _package(mod, name)
                if dst_pkg is None:
                    continue
                dst_mod = mod if imported is None or f"{mod}.{imported}" not in _modules(root) else f"{mod}.{imported}"
                src_layer, dst_layer = layer_of(module, name), layer_of(dst_mod, name)
                if src_layer is not None and dst_layer is not None and dst_layer < src_layer and not shim:
                    upward.append({"file": str(rel), "line": node.lineno, "from": module, "import": dst_mod})
                if dst_pkg != src_pkg and not shim:
                    edges[(src_pkg or "?", dst_pkg, where)] += 1
                    # a private name of another package: from usher2.x.y import _z, or usher2.x._y
                    names = [imported or "", *mod.split(".")[2:]]
                    priv = any(n.startswith("_") and not (n.startswith("__") and n.endswith("__")) for n in names)
                    if priv:
                        private.append(
                            {"file": str(rel), "line": node.lineno, "import": f"{mod}.{imported}" if imported else mod}
                        )
    return {"edges": edges, "private": private, "upward": upward, "functions": long_functions, "imports": n_imports}


@functools.cache
def _modules(root: Path) -> set[str]:
    """Every module name under ``root`` (``usher2.fusion.fit``; packages as ``usher2.fusion``)."""
    found = set()
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1] / "usher2")
    ap.add_argument("--max-lines", type=int, default=100)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    s = scan(a.root)
    edges: Counter = s["edges"]
    pairs = sorted({(f, t) for f, t, _ in edges})
    print(f"## Import graph of {a.root.name}/ (import statements between sub-packages; module-level + local)\n")
    print("| from | to | module-level | inside functions |")
    print("|---|---|---|---|")
    for f, t in pairs:
        print(f"| {f} | {t} | {edges[(f, t, 'module')]} | {edges[(f, t, 'local')]} |")
    total = s["imports"]["module"] + s["imports"]["local"]
    print(f"\ninternal import statements: {total}, of them inside functions: {s['imports']['local']}")

    breaks = [
        (f, t, edges[(f, t, "module")] + edges[(f, t, "local")]) for f, t in pairs if t in FORBIDDEN.get(f, set())
    ]
    print(f"\n## Layering breaks ({len(breaks)} forbidden package edges, {len(s['private'])} private-name imports)\n")
    for f, t, n in breaks:
        print(f"- {f} -> {t}: {n} import(s)")
    for p in s["private"]:
        print(f"- {p['file']}:{p['line']} imports private `{p['import']}`")
    print(f"\n## Imports against the layers (LAYERS, top first): {len(s['upward'])}\n")
    print(" > ".join(" | ".join(layer) for layer in LAYERS) + "\n")
    for u in s["upward"]:
        print(f"- {u['file']}:{u['line']} ({u['from']}) imports `{u['import']}` from a layer above")

    long = sorted((x for x in s["functions"] if x["lines"] > a.max_lines), key=lambda x: -x["lines"])
    counted = [x for x in long if not x["file"].startswith(EXEMPT_LONG)]
    print(f"\n## Functions over {a.max_lines} lines: {len(long)} ({len(counted)} outside the phantom and simulator)\n")
    print("| lines | function | where |")
    print("|---|---|---|")
    for x in long:
        print(f"| {x['lines']} | {x['function']} | {x['file']}:{x['line']} |")
    if a.json:
        out = {
            "edges": [{"from": f, "to": t, "kind": k, "n": n} for (f, t, k), n in sorted(edges.items())],
            "private_imports": s["private"],
            "upward_imports": s["upward"],
            "long_functions": long,
            "imports": dict(s["imports"]),
        }
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
