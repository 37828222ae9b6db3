"""Benchmark: learning through label noise — every registered method of issue 3 against CE.

For each task, noise setting and seed, the training labels are corrupted once (the same noisy
data for every method), each method trains the same architecture from the same initialisation
with the same optimizer settings, and the accuracy on the *clean* test labels is measured:

* ``last`` — after the final epoch (what a user without clean validation data gets);
* ``best`` — the best test accuracy over the epochs. This uses the clean test set for model
  selection, so it is an *oracle* diagnostic (does the method ever reach a good model, and does
  it keep it?), not a fair score.

Results are appended as JSON lines to ``--results`` (a rerun skips runs already there, so the
grid can be run in pieces) and rendered to ``--out`` (default docs/benchmarks/label_noise.md).

Run (the defaults are the grid of the issue; the .md states what was actually run):

    .venv/bin/python benchmarks/label_noise.py --tasks digits,synthetic \\
        --noise symmetric:0.2,symmetric:0.4,symmetric:0.6,symmetric:0.8,pair:0.4,instance:0.4 \\
        --methods all --seeds 3 --epochs 60 --jobs 2

Noise-rate-dependent settings use the true rate, as the papers do (they assume it known or
estimated): Co-teaching(+) ``forget_rate = rate``; DivideMix ``lambda_u`` 0 for rate <= 0.2 and for
pair flips, 25 otherwise (the paper's CIFAR-10 choices). Forward/backward correction estimate T
with their default anchor-point procedure (a CE warm-up run of the same length: twice the time).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_MD = ROOT / "docs" / "benchmarks" / "label_noise.md"
RESULTS = ROOT / "docs" / "benchmarks" / "label_noise.jsonl"

ALL_NOISE = "symmetric:0.2,symmetric:0.4,symmetric:0.6,symmetric:0.8,pair:0.4,instance:0.4"
#: Row name -> registered objective name; rows not named like their objective are variants.
METHOD_ROWS = {
    "ce": "ce", "ce+sam": "ce", "label-smoothing": "label-smoothing", "bootstrap-soft": "bootstrap-soft",
    "bootstrap-hard": "bootstrap-hard", "gce": "gce", "sce": "sce", "nce": "nce", "rce": "rce", "mae": "mae",
    "nce+rce": "nce+rce", "nce+mae": "nce+mae", "forward": "forward", "backward": "backward",
    "logitclip": "logitclip", "mixup": "mixup", "elr": "elr", "coteaching": "coteaching",
    "coteaching+": "coteaching+", "adaptive-k": "adaptive-k", "dividemix": "dividemix",
    # Diagnostic variants (not in "all"): warm-up ended before CE starts memorising on digits.
    "dividemix@warmup3": "dividemix", "adaptive-k@warmup5": "adaptive-k",
}
DEFAULT_ROWS = [r for r in METHOD_ROWS if "@" not in r]
SAM_RHO = 0.05


# ---------------------------------------------------------------------- one run
def _task(name: str, seed: int) -> tuple[Any, Any, str]:
    """(train, test, model name) of a task; the split is fixed, not the benchmark seed."""
    import torch

    from robustlab.data import Dataset, load_dataset, make_synthetic

    if name == "synthetic":
        # 10 balanced Gaussian classes in 20-D (Bayes accuracy ~0.93): 10 classes keep 80% symmetric
        # noise learnable (20% right vs 8.9% per wrong class).
        task = make_synthetic(3000, num_classes=10, dim=20, separation=4.0, generator=torch.Generator().manual_seed(0))
        x, y = task.dataset.tensors()
        return Dataset(x[:1500], y[:1500], name="synthetic"), Dataset(x[1500:], y[1500:], name="synthetic"), "mlp"
    return load_dataset(name, split="train"), load_dataset(name, split="test"), "mlp"


def _method(row: str, rate: float, kind: str, epochs: int) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(objective name, its parameters, TrainConfig overrides) of a benchmark row."""
    name = METHOD_ROWS[row]
    params: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    if row == "ce+sam":
        overrides["sam_rho"] = SAM_RHO
    elif name in ("coteaching", "coteaching+"):
        params["forget_rate"] = min(rate, 0.95)
        if name == "coteaching+":
            params["init_epochs"] = max(1, epochs // 10)  # the authors' CIFAR-10 ratio, 20 of 200
    elif name == "dividemix":
        params["lambda_u"] = 0.0 if (rate <= 0.2 or kind == "pair") else 25.0
    if "@warmup" in row:
        params["warmup_epochs"] = int(row.split("@warmup")[1])
    return name, params, overrides


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from robustlab.label_noise.simulate import apply_noise_spec
    from robustlab.models import build_model
    from robustlab.training import TrainConfig, Trainer, build_objective

    train, test, arch = _task(job["task"], job["seed"])
    noisy, labels = apply_noise_spec(job["noise"], train, generator=torch.Generator().manual_seed(1000 + job["seed"]))
    kind, rate = job["noise"].split(":")
    name, params, overrides = _method(job["method"], float(rate), kind, job["epochs"])
    model = build_model(arch, train.input_shape, train.num_classes, seed=job["seed"])
    config = TrainConfig(epochs=job["epochs"], batch_size=job["batch_size"], lr=job["lr"], seed=job["seed"],
                         **overrides)
    start = time.perf_counter()
    result = Trainer(model, build_objective(name, **params), config).fit(noisy, val=test)
    seconds = time.perf_counter() - start
    accs = [row["val_acc"] for row in result.history]
    return {**job, "realised_rate": float(labels.realised_rate), "last": accs[-1], "best": max(accs),
            "best_epoch": int(max(range(len(accs)), key=accs.__getitem__)) + 1, "seconds": seconds,
            "curve": [round(a, 4) for a in accs]}


# ---------------------------------------------------------------------- grid
def _key(r: dict[str, Any]) -> tuple:
    return (r["task"], r["noise"], r["method"], r["seed"], r["epochs"], r["lr"], r["batch_size"])


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_grid(args: argparse.Namespace) -> None:
    done = {_key(r) for r in _load(args.results)}
    jobs = [{"task": t, "noise": n, "method": m, "seed": s, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size}
            for t in args.tasks for n in args.noise for s in range(args.seeds) for m in args.methods]
    jobs = [j for j in jobs if _key(j) not in done]
    print(f"{len(jobs)} runs to do ({len(done)} already in {args.results})", file=sys.stderr)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.jobs) as pool, open(args.results, "a") as out:
        for i, r in enumerate(pool.imap_unordered(run_one, jobs), 1):
            out.write(json.dumps(r) + "\n")
            out.flush()
            print(f"[{i}/{len(jobs)}] {r['task']} {r['noise']} {r['method']} seed {r['seed']}: "
                  f"last {r['last']:.3f} best {r['best']:.3f} ({r['seconds']:.1f}s)", file=sys.stderr)


# ---------------------------------------------------------------------- report
def _ms(values: list[float]) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def render(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = ["# Benchmark: learning through label noise", "",
             ("Generated by `benchmarks/label_noise.py`. Clean-test accuracy (%) as mean ± std over seeds "
             "(each seed: a different noise draw, initialisation and data order; the same for every "
             "method). **last** = after the final epoch; **best** = best epoch on the clean test set "
             "(an oracle diagnostic, not a fair score); Δ = last − CE's last (percentage points); "
             "time = mean wall seconds per run on this machine."), ""]
    lines += args.preamble
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["task"], r["epochs"], r["lr"], r["batch_size"], r["noise"]), []).append(r)
    for (task, epochs, lr, bs, noise), rows in sorted(groups.items()):
        by_method: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_method.setdefault(r["method"], []).append(r)
        ce = [r["last"] for r in by_method.get("ce", [])]
        ce_mean = statistics.fmean(ce) if ce else math.nan
        rate = statistics.fmean(r["realised_rate"] for r in rows)
        lines += ["", (f"## {task} — {noise} (realised {100 * rate:.1f}% wrong labels; {epochs} epochs, lr {lr}, "
                  f"batch {bs})"), "", "| method | seeds | last | best (oracle) | Δ last vs CE | time (s) |",
                  "|---|---|---|---|---|---|"]
        order = sorted(by_method, key=lambda m: -statistics.fmean(r["last"] for r in by_method[m]))
        for m in order:
            rs = by_method[m]
            last = [r["last"] for r in rs]
            delta = 100 * (statistics.fmean(last) - ce_mean)
            lines.append(f"| {m} | {len(rs)} | {_ms(last)} | {_ms([r['best'] for r in rs])} | "
                         f"{'—' if m == 'ce' or math.isnan(delta) else f'{delta:+.1f}'} | "
                         f"{statistics.fmean(r['seconds'] for r in rs):.1f} |")
    lines += ["", "## Environment", "", (f"- Python {platform.python_version()}, {platform.machine()}, "
              f"{os.cpu_count()} CPU cores, runs in {args.jobs} processes with 1 torch thread each."), ""]
    lines += args.epilogue
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="digits,synthetic")
    parser.add_argument("--noise", default=ALL_NOISE)
    parser.add_argument("--methods", default="all")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=OUT_MD)
    parser.add_argument("--notes", type=Path, default=None,
                        help="markdown file with the analysis; its text is split at a line '<!-- results -->' "
                             "into what goes before and after the tables")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    args.tasks = args.tasks.split(",")
    args.noise = args.noise.split(",")
    args.methods = DEFAULT_ROWS if args.methods == "all" else args.methods.split(",")
    unknown = [m for m in args.methods if m not in METHOD_ROWS]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(METHOD_ROWS)}")
    args.preamble, args.epilogue = [], []
    if args.notes is not None:
        before, _, after = args.notes.read_text().partition("<!-- results -->")
        args.preamble, args.epilogue = before.rstrip().splitlines(), after.strip().splitlines()
    if not args.render_only:
        run_grid(args)
    text = render(_load(args.results), args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
