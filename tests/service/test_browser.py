"""Headless Chromium on the cohort report and the service's web page (the checks of bench/browser.py)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench_browser() -> Any:
    name = "usher2_bench_browser"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / "browser.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.slow
def test_report_and_page_in_chromium(tmp_path_factory):
    browser = _bench_browser()
    missing = browser.browser_missing()
    if missing:
        if os.environ.get("CI"):  # .ci/run installs Chromium: in CI this check must run, not skip
            pytest.fail(f"CI must run the browser check, but {missing}")
        pytest.skip(f"headless browser check needs Chromium and Playwright: {missing}")
    work = tmp_path_factory.mktemp("browser")
    built = browser.serve_module().ensure_bundle(work / "bench")  # bundle, held-out frames and cohort report
    checks = browser.run_checks(built["report"], built["bundle"], built["test"], work / "out")
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    assert not failed, failed
    names = {c.name for c in checks}
    assert {"report: every <img> decoded", "page: probability equals the API's", "page: overlay image decoded"} <= names
    assert (work / "out" / "report.png").stat().st_size > 10_000 and (work / "out" / "page.png").stat().st_size > 10_000
