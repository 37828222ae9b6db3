"""The scan at scale: the default scan, and a 3-model sweep in-process vs on a local Ray (2 workers).

    .venv/bin/python benchmarks/scan.py [--quick]

Every configuration runs as the real command (``robustlab scan ...`` in a subprocess, models
already in the cache, a fresh output folder), timed from start to exit. Peak memory is the
largest sum of the proportional set sizes (PSS) of the command and all its descendant processes
(Ray's head, raylet and workers, and evaluate's forked workers included), sampled every 0.1 s
from /proc -- a single process's ru_maxrss would hide the workers, and a sum of resident sizes
would count the pages a forked worker shares with its parent twice. The local and Ray sweeps' stored values are compared bit for
bit (timing rows aside). Writes docs/benchmarks/scan.md.

``--quick``: the sweep runs the clean and corruptions probes only (minutes less).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from robustlab import zoo
from robustlab.scan import ResultsStore

ROOT = Path(__file__).resolve().parents[1]
OUT_MD = ROOT / "docs" / "benchmarks" / "scan.md"
MODELS = ("small-cnn", "mlp", "mlp-e10")  # mlp-e10: the mlp recipe stopped at 10 epochs
TARGET_DEFAULT_S = 180.0


def _sweep_toml(quick: bool) -> str:
    text = ('datasets = ["digits"]\nseeds = [0]\n\n'
            '[[models]]\nname = "small-cnn"\n\n[[models]]\nname = "mlp"\n\n'
            '[[models]]\nname = "mlp"\nlabel = "mlp-e10"\nepochs = 10\n')
    if quick:
        text += "\n[probes.clean]\n\n[probes.corruptions]\n"
    return text


def _pss(pid: int) -> int | None:
    """Proportional set size of ``pid`` in bytes (``/proc/PID/smaps_rollup``): its private pages plus
    its share of pages shared with other processes, so that forked workers, whose pages are mostly
    shared copy-on-write with their parent, are not counted twice. ``None`` if unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _tree_rss(root: int) -> int:
    """Memory of ``root`` and every descendant (read from /proc; vanished pids skipped): the sum of
    their proportional set sizes (resident size where /proc has no smaps_rollup)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * page
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        if pid in rss:
            pss = _pss(pid)
            total += rss[pid] if pss is None else pss
        stack.extend(children.get(pid, []))
    return total


def _run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak MiB of the process tree) of one command; fails loudly on a non-zero exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {err.strip()[-2000:]}")
    return seconds, peak[0] / 2**20


def _values(run_dir: Path) -> dict:
    with ResultsStore(run_dir, create=False) as store:
        rows = store.results(store.run().run_id)
    return {(r.probe, repr(sorted(r.job.items())), r.metric, repr(sorted(r.params.items()))): r.value
            for r in rows if r.unit not in ("ms", "s", "examples/s")}


def _differ(a: dict, b: dict) -> tuple[int, list[str]]:
    """(values compared, the probes of the values that differ in any bit or exist on one side only)."""
    keys = a.keys() & b.keys()
    bad = [k[0] for k in keys if not (a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])))]
    return len(keys), bad + [k[0] for k in a.keys() ^ b.keys()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="sweep with the clean and corruptions probes only")
    args = parser.parse_args()
    exe = str(Path(sys.executable).with_name("robustlab"))
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        env = {**os.environ, "ROBUSTLAB_CACHE": str(tmp_path / "cache")}
        os.environ["ROBUSTLAB_CACHE"] = env["ROBUSTLAB_CACHE"]
        for name, epochs in (("small-cnn", None), ("mlp", None), ("mlp", 10)):  # train once, untimed
            zoo.get_model("digits", name, seed=0, epochs=epochs)
        config = tmp_path / "sweep.toml"
        config.write_text(_sweep_toml(args.quick))
        rows = []
        seconds, peak = _run([exe, "scan", "--out", str(tmp_path / "default")], env)
        rows.append(("default scan (small-cnn on digits, every probe)", "local", seconds, peak))
        print(rows[-1])
        for backend in ("local", "ray"):
            seconds, peak = _run([exe, "scan", "--config", str(config), "--backend", backend,
                                  "--out", str(tmp_path / backend)], env)
            label = f"3-model sweep ({'clean + corruptions' if args.quick else 'every probe'})"
            rows.append((label, backend if backend == "local" else f"ray (local, {os.cpu_count()} CPUs)", seconds, peak))
            print(rows[-1])
        compared, differing = 0, {}
        for run in sorted(p.name for p in (tmp_path / "local").iterdir() if p.is_dir()):
            n, probes = _differ(_values(tmp_path / "local" / run), _values(tmp_path / "ray" / run))
            compared += n
            for probe in probes:
                differing[f"{run}/{probe}"] = differing.get(f"{run}/{probe}", 0) + 1
        differ = sum(differing.values())
        print("differing values by run/probe:", differing)
    end_load = os.getloadavg()
    command = f".venv/bin/python benchmarks/scan.py{' --quick' if args.quick else ''}"
    lines = [
        "# The scan at scale: default scan and a 3-model sweep, in-process vs Ray",
        "",
        (f"`{command}` on {platform.machine()}, {os.cpu_count()} CPUs (load average {load[0]:.1f} at the "
         f"start, {end_load[0]:.1f} at the end), torch {torch.__version__}, Python {sys.version.split()[0]}. "
         "Each row is the real command (`robustlab scan ...`) in a subprocess with the models already in "
         "the cache and a fresh output folder; the Ray rows include starting the local Ray "
         "(`ray.init()` on all CPUs; its workers start cold and import torch). Peak memory is "
         "the largest sum of proportional set sizes (PSS: private pages plus a share of shared ones, so "
         "forked workers are not counted twice) over the command and all its descendant processes, "
         "sampled every 0.1 s."),
        "",
        "| job | backend | wall time (s) | peak memory (MiB) |",
        "| --- | --- | ---: | ---: |",
        *[f"| {job} | {backend} | {s:.1f} | {m:.0f} |" for job, backend, s, m in rows],
        "",
        f"Default-scan target: < {TARGET_DEFAULT_S:.0f} s ({'met' if rows[0][2] < TARGET_DEFAULT_S else 'NOT met'}).",
        f"Sweep models: {', '.join(MODELS)}. Stored values compared local vs Ray (timing rows aside): "
        f"{compared}, differing in any bit: {differ}"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(differing.items()))})." if differing else "."),
        "",
        ("Ray runs each probe job as a task in a single-threaded worker and the driver stores each "
         "result as it arrives; a local run uses the machine's torch threads and shares work between "
         "the jobs of one probe in one process (the adversarial probe's curve job, the corruptions "
         "summary job), which Ray recomputes. Ray's memory is its head, raylet and worker processes."),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    OUT_MD.write_text(text)


if __name__ == "__main__":
    main()
