"""Wall time of one sweep (3 digits models, the default probes) on the local and the Ray backend.

    python benchmarks/sweep_backends.py [--quick] [--num-cpus 2]

Models come from the model cache (trained once, untimed); each backend scans into a fresh folder.
Ray is started once (its start-up is reported apart) with ``--num-cpus`` CPUs, one job per CPU.
The script also checks that both backends stored the same values (timing rows aside) and writes
docs/benchmarks/sweep_backends.md.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from robustlab import zoo
from robustlab.scan import ResultsStore
from robustlab.scan.sweep import parse_sweep, run_sweep

MODELS = [{"name": "small-cnn"}, {"name": "mlp"}, {"name": "mlp", "label": "mlp-e10", "epochs": 10}]


def _values(run_dir: Path) -> dict:
    with ResultsStore(run_dir, create=False) as store:
        rows = store.results(store.run().run_id)
    return {(r.probe, repr(sorted(r.job.items())), r.metric, repr(sorted(r.params.items()))): r.value
            for r in rows if r.unit not in ("ms", "examples/s")}


def _same(a: dict, b: dict) -> tuple[int, int]:
    """(values compared, values that differ in any bit)."""
    keys = a.keys() & b.keys()
    differ = sum(not (a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k]))) for k in keys)
    return len(keys), differ + len(a.keys() ^ b.keys())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="clean and corruptions probes only")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/sweep_backends.md"))
    args = parser.parse_args()
    import ray

    load = os.getloadavg()
    raw = {"models": MODELS, "datasets": ["digits"], "seeds": [0]}
    if args.quick:
        raw["probes"] = {"clean": {}, "corruptions": {}}
    config = parse_sweep(raw)
    for m in config.models:  # train (or find) every model before timing
        zoo.get_model("digits", m.name, seed=0, epochs=m.epochs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up (untimed): one model locally, so the timed local run pays no first imports
        run_sweep(parse_sweep({**raw, "models": MODELS[:1]}), out=Path(tmp) / "warm-up", progress=False)
        start = time.perf_counter()
        local = run_sweep(config, out=Path(tmp) / "local", progress=False)
        rows.append(("local (this process)", time.perf_counter() - start))
        start = time.perf_counter()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        ray_start = time.perf_counter() - start
        start = time.perf_counter()
        remote = run_sweep(config, out=Path(tmp) / "ray", backend="ray", progress=False)
        rows.append((f"ray ({args.num_cpus} CPUs, workers cold)", time.perf_counter() - start))
        ray.shutdown()
        compared = differ = 0
        for (_, a), (_, b) in zip(local.runs, remote.runs):
            n, d = _same(_values(a.out_dir), _values(b.out_dir))
            compared, differ = compared + n, differ + d
        jobs = sum(s.jobs_run for _, s in local.runs)
    probes = "clean, corruptions" if args.quick else "every registered probe (defaults)"
    command = f"python benchmarks/sweep_backends.py{' --quick' if args.quick else ''} --num-cpus {args.num_cpus}"
    lines = [
        "# Sweep backends: local vs Ray",
        "",
        (f"`{command}`: {len(local.runs)} digits models ({', '.join(m.label for m in config.models)}), "
         f"{probes}, {jobs} jobs per backend. Models from the cache and a one-model local warm-up (untimed). Machine: {platform.machine()}, "
         f"{os.cpu_count()} CPUs (load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the "
         f"end), torch {torch.__version__}, {torch.get_num_threads()} torch threads locally, "
         f"Python {sys.version.split()[0]}."),
        "",
        "| backend | sweep wall time (s) |",
        "| --- | ---: |",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in rows],
        "",
        f"Ray start-up (`ray.init`, not included above): {ray_start:.1f} s.",
        f"Stored values compared local vs Ray (timing rows aside): {compared}, differing in any bit: {differ}.",
        "",
        ("Ray runs each job in a worker with one CPU (OMP_NUM_THREADS=1), its workers start cold (they "
         "import torch and robustlab), and it recomputes what a local run shares between the jobs of one "
         "probe in one process (the adversarial probe's curve job, the corruptions summary job); model "
         "training always happens in the driver."),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
