"""The hostile-input probe of issue 22 against a real ``usher2 serve`` process on loopback.

Usage:
    python bench/hostile.py [--work runs/bench-serve]

Starts the service (uvicorn, one process, default settings, no token) on the bench bundle of
``bench/serve.py`` (built when missing), then sends each hostile input once and prints a table:
input, upload size, HTTP status, seconds, the error's field, and the server's resident memory
before the request and its peak (``VmHWM`` after a reset through ``/proc/PID/clear_refs``) while
answering. Targets: a 4xx for every row, pixel bombs answered in under 1 s with a peak under
+200 MB; the last rows score a valid frame before and after, so the service is shown alive.
Loopback only; each request is sent once.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "io"))  # the bomb builders the tests use


def _module(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _mem(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            vals[line.split(":")[0]] = int(line.split()[1]) / 1024
    return vals["VmRSS"], vals["VmHWM"]


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM) to the current RSS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/bench-serve")
    args = ap.parse_args()
    serve_bench = _module("usher2_bench_serve", HERE / "serve.py")
    bombs = _module("usher2_test_bombs", HERE.parent / "tests" / "io" / "bombs.py")
    built = serve_bench.ensure_bundle(args.work)
    frame = sorted((built["test"] / "images").glob("*.png"))[0].read_bytes()

    def png(data: bytes) -> dict[str, Any]:
        return {"files": {"file": ("frame.png", data, "image/png")}}

    tmp = Path(args.work) / "hostile"
    tmp.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("valid frame", png(frame)),
        ("grey PNG 12000x12000", png(bombs.grey_png_bomb())),
        ("RGB PNG 13000x13000", png(bombs.rgb_png_bomb())),
        (
            "deflated DICOM 20000x20000",
            {"files": {"file": ("b.dcm", bombs.deflated_dicom_bomb(), "application/dicom")}},
        ),
        ("clinical nested 2000 deep", {**png(frame), "data": {"clinical": "[" * 2000 + "]" * 2000}}),
        ("clinical 200 KB of nesting", {**png(frame), "data": {"clinical": "[" * 100_000 + "]" * 100_000}}),
        ("clinical age -5000", {**png(frame), "data": {"clinical": json.dumps({"age": -5000})}}),
        ("clinical age 'abc'", {**png(frame), "data": {"clinical": json.dumps({"age": "abc"})}}),
        (
            "malformed multipart",
            {
                "content": b'--x\r\nContent-Disposition: form-data; name="file"\r\n\r\nab',
                "headers": {"Content-Type": "multipart/form-data; boundary=x"},
            },
        ),
        ("valid frame (after)", png(frame)),
    ]
    log = Path(args.work) / "hostile-server.log"
    rows = []
    with serve_bench.Server(built["bundle"], log, token="") as server, httpx.Client(timeout=120) as client:
        for name, kw in cases:
            size = sum(len(v[1]) for v in kw.get("files", {}).values()) + len(kw.get("content", b""))
            rss0, _ = _mem(server.pid)
            _reset_peak(server.pid)
            t = time.perf_counter()
            r = client.post(f"{server.url}/v1/score", **kw)
            dt = time.perf_counter() - t
            _, peak = _mem(server.pid)
            j = r.json()
            rows.append(
                (name, size, r.status_code, dt, j.get("field") or f"p={j.get('probability', 0):.3f}", rss0, peak - rss0)
            )
        # two bombs at once
        rss0, _ = _mem(server.pid)
        _reset_peak(server.pid)
        out: list[int] = []
        data = [bombs.rgb_png_bomb(), bombs.rgb_png_bomb()]

        def send(d: bytes) -> None:
            with httpx.Client(timeout=120) as c:
                out.append(c.post(f"{server.url}/v1/score", files={"file": ("b.png", d, "image/png")}).status_code)

        t = time.perf_counter()
        threads = [threading.Thread(target=send, args=(d,)) for d in data]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        _, peak = _mem(server.pid)
        rows.append(
            ("2 x RGB PNG at once", sum(map(len, data)), max(out), time.perf_counter() - t, f"{out}", rss0, peak - rss0)
        )
    print(
        f"{'input':30} {'bytes':>9} {'status':>6} {'seconds':>8} {'field / result':28} {'RSS MiB':>8} {'peak +MiB':>9}"
    )
    for name, size, status, dt, field, rss0, grow in rows:
        print(f"{name:30} {size:9d} {status:6d} {dt:8.3f} {field:28} {rss0:8.0f} {grow:9.1f}")


if __name__ == "__main__":
    main()
