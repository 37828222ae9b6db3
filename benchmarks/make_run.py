"""Benchmark the main job: `robustlab scan` on the built-in digits data.

Measures, on this machine, the wall time of the default scan with an empty model cache (the
model is trained) and with a warm cache (the model is reused), the scan's clean test accuracy and
the peak resident memory. Prints a table and writes it to docs/benchmarks/make_run.md.

With ``--fresh-clone`` it also times ``make run`` in a fresh ``git clone`` of this repository
(virtual environment creation, install from the local wheelhouse/registry, training and scan).

Run: .venv/bin/python benchmarks/make_run.py [--repeats 3] [--fresh-clone]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_MD = ROOT / "docs" / "benchmarks" / "make_run.md"
TARGET_S = 180.0
TARGET_ACC = 0.95


def _scan(cache: Path, out: Path) -> tuple[float, float]:
    env = {**os.environ, "ROBUSTLAB_CACHE": str(cache)}
    exe = Path(sys.executable).with_name("robustlab")
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([str(exe), "scan", "--out", str(out)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak_mb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return seconds, peak_mb


def _fresh_clone_make_run() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "robustlab"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {**os.environ, "ROBUSTLAB_CACHE": str(Path(tmp) / "cache")}
        start = time.perf_counter()
        subprocess.run(["make", "run"], cwd=clone, check=True, env=env, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


def _test_size() -> int:
    from robustlab.data import load_dataset

    return len(load_dataset("digits", split="test"))


def _accuracy(out: Path) -> float:
    with sqlite3.connect(out / "results.sqlite") as con:
        row = con.execute("SELECT value FROM results WHERE probe='clean' AND metric='accuracy' "
                          "ORDER BY rowid DESC LIMIT 1").fetchone()
    return float(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fresh-clone", action="store_true")
    args = parser.parse_args()
    fresh = _fresh_clone_make_run() if args.fresh_clone else None
    cold, warm, accs, peaks = [], [], [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            s, peak = _scan(tmp_path / "cache", tmp_path / "run-cold")
            cold.append(s)
            peaks.append(peak)
            accs.append(_accuracy(tmp_path / "run-cold"))
            s, _ = _scan(tmp_path / "cache", tmp_path / "run-warm")
            warm.append(s)
    import torch

    rows = [
        ("scan, empty cache (trains small-cnn)", f"{statistics.median(cold):.1f} s",
         f"{min(cold):.1f} – {max(cold):.1f} s", f"< {TARGET_S:.0f} s", statistics.median(cold) < TARGET_S),
        ("scan, cached model", f"{statistics.median(warm):.1f} s", f"{min(warm):.1f} – {max(warm):.1f} s",
         "—", True),
        (f"clean test accuracy (digits, {_test_size()} held-out)", f"{statistics.median(accs):.4f}",
         f"{min(accs):.4f} – {max(accs):.4f}", f">= {TARGET_ACC}", min(accs) >= TARGET_ACC),
        ("peak RSS of the scan process", f"{max(peaks):.0f} MiB", "", "—", True),
    ]
    if fresh is not None:
        rows.insert(0, ("`make run` in a fresh clone (venv + install + train + scan)", f"{fresh:.0f} s",
                        "1 run", "—", True))
    header = "| measurement | median | range | target | met |\n|---|---|---|---|---|\n"
    body = "".join(f"| {a} | {b} | {c} | {d} | {'yes' if e else 'NO'} |\n" for a, b, c, d, e in rows)
    env = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
           f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}")
    text = (
        "# `make run` — the default scan on digits\n\n"
        f"Command: `.venv/bin/python benchmarks/make_run.py --repeats {args.repeats}"
        f"{' --fresh-clone' if args.fresh_clone else ''}` "
        "(each repeat: `robustlab scan` with an empty model cache, then again with the cache warm).\n\n"
        f"Machine: {env}.\n\n" + header + body +
        "\nThe cold time includes Python start-up, loading digits, training the small CNN "
        "(15 epochs) and running every registered probe; the warm time is the scan alone.\n"
    )
    OUT_MD.parent.mkdir(parents=True, exist_ok=True)
    OUT_MD.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
