"""Benchmark the scoring service under load: 16 concurrent clients on loopback.

Usage:
    python bench/serve.py [--bundle DIR] [--seconds 120] [--clients 16] [--work runs/bench-serve]
                          [--max-concurrent 2] [--max-queue 16] [--max-batch 16] [--max-wait-ms 5]

Starts ``usher2.service.serve`` (uvicorn, one process) in a subprocess with a bundle. Without
``--bundle`` it uses ``WORK/bundles/combined``, built first when missing the way the test
fixture ``scoring_bundle`` builds its bundle (40 simulated 128-px training cases, 12 held-out
cases, radiomics + usresnet10t + clinical, logistic regression; about 20 s), together with the
held-out cohort's evaluation directory and cohort report (``WORK/report.html``, which
``bench/browser.py`` checks).

After 16 warm-up requests one at a time and ``--warmup-seconds`` of the full load (so the
batches, and the memory they take, have reached their steady size), ``--clients`` threads post
the held-out frames (alternately with and without clinical values) for ``--seconds``. Printed:
requests, errors (any status other than 200, target 0), throughput, latency percentiles, the
server's CPU seconds per request (all its threads: a measure of work that does not depend on
what else the shared cores run), the
micro-batches the requests ran in (from each response's ``timings``: ``batch_size``,
``model_wait_s``, ``score_s``; see ``usher2.service.batching``), and the server's resident memory
when loaded, after the warm-up and at the end, with its growth over the run (target < 10%). The
server's log (one line per request) goes to ``WORK/server.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

CLINICAL = ("age", "er", "grade")
_CHILD = (
    "import json, sys\n"
    "from usher2.service import serve\n"
    "serve(sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]), **json.loads(sys.argv[3]))\n"
)


def ensure_bundle(work: str | Path) -> dict[str, Path]:
    """The small bench bundle, its held-out cohort and cohort report in ``work``, built when missing.

    Returns:
        ``{"bundle": WORK/bundles/combined, "test": WORK/test, "report": WORK/report.html}``.
    """
    work = Path(work)
    out = {"bundle": work / "bundles" / "combined", "test": work / "test", "report": work / "report.html"}
    if all(p.exists() for p in out.values()) and (out["bundle"] / "model.skops").is_file():
        return out
    from usher2.pipeline import Pipeline, PipelineConfig
    from usher2.simulate import SimulationConfig, simulate_cohort

    t = time.perf_counter()
    sim = SimulationConfig(image_size=(128, 128))
    simulate_cohort(40, 11, work / "train", config=sim, workers=1)
    simulate_cohort(12, 12, work / "test", config=sim, workers=1)
    params = {
        "imageType": {"Original": {}},
        "featureClass": {"shape2D": None, "firstorder": None, "glcm": None},
        "setting": {"binWidth": 16, "label": 1},
    }
    cfg = PipelineConfig(
        radiomics=params,
        masks="predicted",
        backbones=("usresnet10t",),
        models=("combined",),
        clinical=CLINICAL,
        outer_folds=3,
        inner_folds=2,
        calibration=None,
        cam_examples=2,
    )
    Pipeline(cfg).run(work / "train" / "manifest.csv", work / "test" / "manifest.csv", work, title="usher2 bench")
    print(f"built the bench bundle and report in {work} ({time.perf_counter() - t:.0f} s)")
    return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    """CPU seconds a process has used so far, all its threads, user + system (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Server:
    """``usher2.service.serve`` in a subprocess on 127.0.0.1; a context manager that waits for /healthz.

    Args:
        bundle: The bundle folder.
        log: File for the server's stdout and stderr.
        port: TCP port (None: a free one).
        startup_s: How long to wait for /healthz.
        **settings: ``create_app`` keywords (token, max_concurrent, max_queue, ...).
    """

    def __init__(
        self, bundle: str | Path, log: str | Path, *, port: int | None = None, startup_s: float = 180, **settings: Any
    ) -> None:
        self.bundle, self.log = str(bundle), Path(log)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.startup_s = startup_s
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        fh = self.log.open("wb")
        cmd = [sys.executable, "-c", _CHILD, self.bundle, str(self.port), json.dumps(self.settings)]
        self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=os.environ.copy())
        fh.close()
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).json().get("model_loaded"):
                    return self
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.25)
        self.__exit__()
        raise TimeoutError(f"the server did not answer /healthz within {self.startup_s:.0f} s; see {self.log}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # uvicorn shuts down gracefully on SIGTERM
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _requests(test_dir: Path) -> list[tuple[bytes, dict[str, str]]]:
    """The held-out frames, alternately with and without their clinical values."""
    m = pd.read_csv(test_dir / "manifest.csv")
    out = []
    for i, row in m.iterrows():
        data = (test_dir / row["image"]).read_bytes()
        form = {"clinical": json.dumps({c: float(row[c]) for c in CLINICAL})} if i % 2 == 0 else {}
        out.append((data, form))
    return out


def _post(
    client: httpx.Client, url: str, item: tuple[bytes, dict[str, str]]
) -> tuple[float, int, str, dict[str, float]]:
    """Post one frame: (seconds, status, error note, the response's timings: {} unless 200)."""
    data, form = item
    t = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        r = client.post(f"{url}/v1/score", files={"file": ("frame.png", data, "image/png")}, data=form)
        status, note = r.status_code, "" if r.status_code == 200 else r.text[:200]
    except httpx.HTTPError as exc:
        status, note = 0, f"{type(exc).__name__}: {exc}"
    lat = time.perf_counter() - t
    if status == 200:
        timings = r.json()["timings"]
    return lat, status, note, timings


def load(
    url: str, items: list[tuple[bytes, dict[str, str]]], clients: int, seconds: float
) -> list[tuple[float, int, dict[str, float]]]:
    """``clients`` threads posting ``items`` round-robin until ``seconds`` have passed: (latency, status,
    timings) each."""
    results: list[tuple[float, int, dict[str, float]]] = []
    notes: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(k: int) -> None:
        with httpx.Client(timeout=120) as client:
            i = k
            while time.monotonic() < deadline:
                lat, status, note, timings = _post(client, url, items[i % len(items)])
                i += clients
                with lock:
                    results.append((lat, status, timings))
                    if note and len(notes) < 5:
                        notes.append(f"status {status}: {note}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in notes:
        print(f"  error: {n}")
    return results


def print_batches(timings: list[dict[str, float]]) -> None:
    """The micro-batches the 200 responses ran in: sizes, and each request's wait and batch time."""
    if not timings:
        return
    sizes = np.array([t.get("batch_size", 1) for t in timings])
    wait = np.array([t.get("model_wait_s", 0.0) for t in timings]) * 1000
    run = np.array([t.get("score_s", 0.0) for t in timings]) * 1000
    print("\nMicro-batches (per request; a batch of k frames counts k times):\n")
    print("| batch size mean | p10 | p50 | p90 | max | model wait p50 ms | p90 ms | batch run p50 ms | p90 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    q = np.percentile(sizes, [10, 50, 90])
    print(
        f"| {sizes.mean():.1f} | {q[0]:.0f} | {q[1]:.0f} | {q[2]:.0f} | {sizes.max():.0f} | "
        f"{np.median(wait):.0f} | {np.percentile(wait, 90):.0f} | {np.median(run):.0f} | {np.percentile(run, 90):.0f} |"
    )
    stages = ("read", "prepare", "features", "model", "heatmap", "encode")
    means = {k: 1000 * float(np.mean([t.get(f"{k}_s", 0.0) for t in timings])) for k in stages}
    print("\nPer-frame stage means (ms; a batch stage's time divided by its frames):\n")
    print("| " + " | ".join(stages) + " |\n|" + "---|" * len(stages))
    print("| " + " | ".join(f"{means[k]:.1f}" for k in stages) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, help="bundle folder (default: WORK/bundles/combined, built if missing)")
    ap.add_argument("--test", type=Path, help="folder with manifest.csv + images to post (default: WORK/test)")
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-concurrent", type=int, default=2)
    ap.add_argument("--max-queue", type=int, default=16)
    ap.add_argument("--max-batch", type=int, help="most frames in one batch through the networks (server default)")
    ap.add_argument("--max-wait-ms", type=float, help="longest wait for a batch to fill (server default)")
    ap.add_argument("--warmup-seconds", type=float, default=5.0, help="full load before the measured run")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-serve"))
    args = ap.parse_args()
    built = ensure_bundle(args.work) if args.bundle is None or args.test is None else {}
    bundle = args.bundle or built["bundle"]
    items = _requests(args.test or built["test"])
    print("# usher2 service bench")
    print(
        f"\nbundle {bundle}; {len(items)} frames (128 px) posted round-robin by {args.clients} clients for "
        f"{args.seconds:g} s; server: max_concurrent {args.max_concurrent}, max_queue {args.max_queue}, "
        f"max_batch {args.max_batch or 'default'}, max_wait_ms {args.max_wait_ms or 'default'}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} cores shared with the "
        "clients\n"
    )
    settings: dict[str, Any] = {"max_concurrent": args.max_concurrent, "max_queue": args.max_queue, "token": ""}
    for key in ("max_batch", "max_wait_ms"):  # only when given: the server's defaults otherwise
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    with Server(bundle, args.work / "server.log", **settings) as server:
        rss_start = rss_mb(server.pid)
        with httpx.Client(timeout=120) as c:
            warm = [_post(c, server.url, items[i % len(items)])[:2] for i in range(16)]
        warm += [r[:2] for r in load(server.url, items, args.clients, args.warmup_seconds)]
        rss_warm = rss_mb(server.pid)
        peak = [rss_warm]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                peak.append(rss_mb(server.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t, cpu0 = time.perf_counter(), cpu_s(server.pid)
        results = load(server.url, items, args.clients, args.seconds)
        wall, cpu = time.perf_counter() - t, cpu_s(server.pid) - cpu0
        stop.set()
        sampler.join()
        rss_end = rss_mb(server.pid)
    lat = np.array([r[0] for r in results]) * 1000
    errors = sum(1 for r in results if r[1] != 200)
    growth = (rss_end - rss_warm) / rss_warm * 100
    print("| clients | seconds | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms | server CPU ms/req |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    p50, p90, p99 = np.percentile(lat, [50, 90, 99])
    print(
        f"| {args.clients} | {wall:.1f} | {len(results)} | {errors} | {len(results) / wall:.2f} | "
        f"{p50:.0f} | {p90:.0f} | {p99:.0f} | {lat.max():.0f} | {cpu / len(results) * 1000:.0f} |"
    )
    print_batches([r[2] for r in results if r[1] == 200])
    print("\nServer resident memory (MiB):\n")
    print("| loaded | after the warm-up | peak during run | end | growth over the run |")
    print("|---|---|---|---|---|")
    print(
        f"| {rss_start:.0f} | {rss_warm:.0f} | {max(peak):.0f} | {rss_end:.0f} | {growth:+.1f}% "
        f"(from loaded: {(rss_end - rss_start) / rss_start * 100:+.1f}%) |"
    )
    warm_errors = sum(1 for w in warm if w[1] != 200)
    print(
        f"\nTargets: errors 0 ({'met' if errors == 0 and warm_errors == 0 else 'NOT met'}); memory growth over "
        f"the run < 10% ({'met' if growth < 10 else 'NOT met'})."
    )
    if errors or warm_errors or growth >= 10:
        sys.exit(1)


if __name__ == "__main__":
    main()
