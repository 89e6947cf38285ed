"""Headless-Chromium checks of the HTML the project shows people: a cohort report and the service's page.

Usage:
    python bench/browser.py [--report PATH] [--bundle DIR] [--work runs/bench-browser] [--no-install]

Uses Debian's Chromium (``/usr/bin/chromium``) driven by Playwright's Python package with
``executable_path``; when either is missing the script installs it (``apt-get install -y
chromium``; ``pip install playwright`` into this interpreter; never ``playwright install``),
unless ``--no-install``. Each check runs in a fresh user-data-dir with :data:`LAUNCH_ARGS`.

Checks:

(a) the cohort report (``--report``; default: the bench report that ``bench/serve.py`` builds in
    ``runs/bench-serve``): it loads from a ``file://`` URL with no console error, no page error,
    no failed request and no request leaving the file; every ``<img>`` is decoded
    (``naturalWidth > 0``); a full-page screenshot.
(b) the service's web page: ``usher2.service.serve`` in a subprocess with a bearer token; the page
    loads with no console error (a Content-Security-Policy violation is one) and no request
    leaving the server; a frame is uploaded through the file input with the token and clinical
    values typed into the form; the probability shown equals the API's answer for the same
    upload (to 3 decimals) and the overlay image is decoded; a screenshot.

Prints a table of checks (pass/FAIL) and exits 1 when any fails. Screenshots go to ``--work``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
TOKEN = "bench-browser-token"


@dataclass
class Check:
    """One check: its name, whether it passed, and what was seen."""

    name: str
    ok: bool
    detail: str = ""


def browser_missing() -> str | None:
    """Why the browser checks cannot run here (None: Chromium and Playwright are both present)."""
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is absent (apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return f"the playwright package is absent from {sys.executable} (pip install playwright)"
    return None


def ensure_browser() -> None:
    """Install Debian's Chromium and Playwright's Python package when missing."""
    if not Path(CHROMIUM).is_file():
        print("installing chromium with apt-get ...")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True)
    if importlib.util.find_spec("playwright") is None:
        print(f"installing playwright into {sys.executable} ...")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "playwright"], check=True)
        importlib.invalidate_caches()


class _Watch:
    """Collects console errors, page errors, failed requests and requests that leave ``allowed``."""

    def __init__(self, page: Any, allowed: tuple[str, ...]) -> None:
        self.console: list[str] = []
        self.failed: list[str] = []
        self.outside: list[str] = []
        page.on("console", lambda m: self.console.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.console.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url[:80]} ({r.failure})"))
        page.on(
            "response", lambda r: self.failed.append(f"{r.url[:80]} (HTTP {r.status})") if r.status >= 400 else None
        )
        page.on("request", lambda r: None if r.url.startswith(allowed) else self.outside.append(r.url[:80]))

    def checks(self, what: str) -> list[Check]:
        return [
            Check(f"{what}: no console errors", not self.console, "; ".join(self.console[:3])),
            Check(f"{what}: no failed requests", not self.failed, "; ".join(self.failed[:3])),
            Check(f"{what}: no external requests", not self.outside, "; ".join(self.outside[:3])),
        ]


_IMAGES_JS = "Array.from(document.images).map(i => [i.complete, i.naturalWidth, (i.alt || '').slice(0, 40)])"


def serve_module() -> Any:
    """``bench/serve.py`` (its ``Server`` and ``ensure_bundle``), loaded by path so that importing
    this file from a test does not need ``bench/`` on ``sys.path``."""
    name = "usher2_bench_serve"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "serve.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _context(pw: Any, user_data_dir: str) -> Any:
    return pw.chromium.launch_persistent_context(
        user_data_dir,
        executable_path=CHROMIUM,
        headless=True,
        args=list(LAUNCH_ARGS),
        viewport={"width": 1200, "height": 900},
    )


def check_report(pw: Any, report: Path, shot: Path) -> list[Check]:
    """Check (a): the cohort report loads cleanly and every image decodes."""
    with tempfile.TemporaryDirectory(prefix="usher2-chromium-") as profile:
        ctx = _context(pw, profile)
        try:
            page = ctx.new_page()
            watch = _Watch(page, ("file://", "data:"))
            page.goto(report.resolve().as_uri(), wait_until="load")
            title = page.title()
            images = page.evaluate(_IMAGES_JS)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            ctx.close()
    bad = [alt or f"image {i}" for i, (done, width, alt) in enumerate(images) if not done or width <= 0]
    return [
        Check("report: loads", bool(title), f"title {title!r}"),
        *watch.checks("report"),
        Check("report: every <img> decoded", bool(images) and not bad, f"{len(images)} images; bad: {bad[:3]}"),
        Check("report: screenshot", shot.is_file() and shot.stat().st_size > 0, str(shot)),
    ]


def check_page(pw: Any, url: str, image: Path, clinical: dict[str, float], shot: Path, token: str) -> list[Check]:
    """Check (b): upload ``image`` through the service's page; compare with the API's own answer."""
    import httpx

    with httpx.Client(timeout=120) as client:
        api = client.post(
            f"{url}/v1/score",
            files={"file": (image.name, image.read_bytes(), "image/png")},
            data={"clinical": json.dumps(clinical)},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
    with tempfile.TemporaryDirectory(prefix="usher2-chromium-") as profile:
        ctx = _context(pw, profile)
        try:
            page = ctx.new_page()
            watch = _Watch(page, (url, "data:"))
            page.goto(f"{url}/", wait_until="load")
            page.fill("#token", token)
            page.press("#token", "Tab")  # leaving the field loads the model's details and clinical fields
            for name, value in clinical.items():
                page.fill(f'[data-clinical="{name}"]', f"{value:g}")
            page.set_input_files("#file", str(image))
            page.click("#submit")
            page.wait_for_selector('#result[data-state="done"], #status.error', timeout=120_000)
            state = page.get_attribute("#result", "data-state")
            status = page.inner_text("#status")
            prob = page.inner_text("#probability") if state == "done" else ""
            flags = page.inner_text("#flags") if state == "done" else ""
            overlay = page.evaluate(
                "(() => { const i = document.getElementById('overlay');"
                " return [i.complete, i.naturalWidth, i.naturalHeight, i.src.slice(0, 22)]; })()"
            )
            page.screenshot(path=str(shot), full_page=True)
        finally:
            ctx.close()
    want = api.get("probability")
    want_text = f"Probability {want:.3f}" if isinstance(want, float) else "(the API gave no probability)"
    want_flags = "Flags: " + (", ".join(api.get("flags") or []) or "none")
    return [
        Check("page: result shown", state == "done", status[:120]),
        Check("page: probability equals the API's", prob == want_text, f"page {prob!r}; API {want_text!r}"),
        Check("page: flags equal the API's", flags == want_flags, f"page {flags!r}"),
        Check(
            "page: overlay image decoded",
            bool(overlay[0]) and overlay[1] > 0 and overlay[3] == "data:image/png;base64,",
            f"{overlay[1]}x{overlay[2]}",
        ),
        *watch.checks("page"),
        Check("page: screenshot", shot.is_file() and shot.stat().st_size > 0, str(shot)),
    ]


def run_checks(report: Path, bundle: Path, test_dir: Path, work: Path) -> list[Check]:
    """Both checks: the report, then the service (started here with a token) and its page."""
    import pandas as pd
    from playwright.sync_api import sync_playwright

    bench_serve = serve_module()
    work.mkdir(parents=True, exist_ok=True)
    m = pd.read_csv(test_dir / "manifest.csv")
    image = test_dir / m["image"][0]
    clinical = {c: float(m[c][0]) for c in ("age", "er", "grade") if c in m.columns}
    checks: list[Check] = []
    with sync_playwright() as pw:
        checks += check_report(pw, report, work / "report.png")
        with bench_serve.Server(bundle, work / "server.log", token=TOKEN, log_level="warning") as server:
            checks += check_page(pw, server.url, image, clinical, work / "page.png", TOKEN)
    return checks


def print_table(checks: list[Check]) -> None:
    print("| check | result | detail |")
    print("|---|---|---|")
    for c in checks:
        print(f"| {c.name} | {'pass' if c.ok else 'FAIL'} | {c.detail.replace('|', '/')} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", type=Path, help="cohort report HTML (default: the bench report, built if missing)")
    ap.add_argument("--bundle", type=Path, help="bundle for the service (default: the bench bundle)")
    ap.add_argument("--test", type=Path, help="folder with manifest.csv + images (default: the bench's held-out set)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-browser"), help="screenshots and the server log")
    ap.add_argument("--bench-work", type=Path, default=Path("runs/bench-serve"), help="where the bench bundle lives")
    ap.add_argument("--no-install", action="store_true", help="fail instead of installing Chromium/Playwright")
    args = ap.parse_args()
    missing = browser_missing()
    if missing and args.no_install:
        sys.exit(f"cannot run the browser checks: {missing}")
    if missing:
        ensure_browser()
    built = serve_module().ensure_bundle(args.bench_work) if not (args.report and args.bundle and args.test) else {}
    report = args.report or built["report"]
    bundle = args.bundle or built["bundle"]
    test_dir = args.test or built["test"]
    from importlib.metadata import version

    chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    print("# usher2 browser checks")
    print(f"\n{chromium}; playwright {version('playwright')}; report {report}; bundle {bundle}\n")
    checks = run_checks(report, bundle, test_dir, args.work)
    print_table(checks)
    failed = [c for c in checks if not c.ok]
    print(f"\n{len(checks) - len(failed)} passed, {len(failed)} failed; screenshots in {args.work}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
