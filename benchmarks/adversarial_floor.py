"""The least time any AutoAttack-configured evaluation can take on a model: its model passes alone.

AutoAttack's standard suite (fra31/auto-attack, ``version="standard"``) makes a fixed number of
model passes on the examples each attack is run on: APGD-CE and APGD-T 100 iterations of forward +
input gradient (APGD-T for 9 target classes), FAB-T 100 iterations of forward + input gradient plus
one forward per iteration (9 targets), Square one forward per query (5000). An example leaves an
attack early only when it is broken, so on examples that stay robust the counts are exact.

This script times those passes alone -- torch's forward and ``autograd.grad`` of the zoo's
small-cnn, nothing else -- and takes, for each kind of pass, the cheapest cost per example over
chunk sizes (``CHUNKS``) and over two ways of using the cores: one process with ``--cores`` torch
threads, or one thread per core with perfect scaling across processes (its one-thread cost
divided by the cores). Multiplied by the passes the suite makes on the row counts of a measured
run (``--rows``: examples attacked by APGD-CE, APGD-T, FAB-T, Square), this is a floor: no
implementation that runs AutoAttack's configuration with torch on this model and CPU can be
faster. It is compared with time budgets (``--budget NAME=SECONDS``, e.g. half of torchattacks'
shipped AutoAttack).

Run: .venv/bin/python benchmarks/adversarial_floor.py --rows 359,314,313,313 \
         --budget "half of torchattacks' AutoAttack=21.0"
Prints a table and writes docs/benchmarks/adversarial_floor.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks" / "adversarial_floor.md"
CHUNKS = (32, 64, 96, 128, 160, 192, 256, 320)
STEPS, TARGETS, QUERIES = 100, 9, 5000


def _per_row(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, grad: bool, reps: int = 60) -> float:
    """Best-of-3 seconds per row of one forward (+ input gradient) pass on ``x``."""
    def once() -> None:
        if grad:
            xx = x.clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(xx), y, reduction="sum")
            torch.autograd.grad(loss, xx)
        else:
            with torch.no_grad():
                model(x)
    for _ in range(10):
        once()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            once()
        best = min(best, (time.perf_counter() - t) / reps)
    return best / x.shape[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="359,314,313,313",
                    help="examples attacked by APGD-CE, APGD-T, FAB-T, Square (from a measured run)")
    ap.add_argument("--budget", action="append", default=[], help="NAME=SECONDS to compare the floor with")
    ap.add_argument("--model", choices=("natural", "pgd-at"), default="pgd-at",
                    help="which small-cnn of benchmarks/adversarial.py (same architecture, same cost)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    rows = [int(r) for r in args.rows.split(",")]
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import adversarial as bench  # the models of docs/benchmarks/adversarial.md

    model = bench._natural_model(False) if args.model == "natural" else bench._at_model(False)[0]
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    grid = []  # (chunk, threads, forward+grad s/row, forward s/row), already divided for processes
    for chunk in CHUNKS:
        x = torch.rand(chunk, 1, 8, 8, generator=g)
        y = torch.randint(0, 10, (chunk,), generator=g)
        for threads in (1, args.cores):
            torch.set_num_threads(threads)
            share = args.cores if threads == 1 else 1
            grid.append((chunk, threads, _per_row(model, x, y, grad=True) / share,
                         _per_row(model, x, y, grad=False) / share))
            print(f"chunk {chunk:4d} threads {threads}: forward+grad {grid[-1][2] * 1e6:7.2f} us/row, "
                  f"forward {grid[-1][3] * 1e6:7.2f} us/row (per core-share)", flush=True)
    best_fb = min(grid, key=lambda r: r[2])
    best_f = min(grid, key=lambda r: r[3])
    fb, f = best_fb[2], best_f[3]
    passes = [  # (attack, forward+grad passes per row, forward passes per row, rows)
        ("apgd-ce", STEPS, 0, rows[0]),
        ("apgd-t", TARGETS * STEPS, 0, rows[1]),
        ("fab-t", TARGETS * STEPS, TARGETS * STEPS, rows[2]),
        ("square", 0, QUERIES, rows[3]),
    ]
    lines = ["| attack | rows | forward + gradient passes per row | forward passes per row | "
             f"floor on {args.cores} cores (s) |", "|---|---:|---:|---:|---:|"]
    floor = 0.0  # wall seconds: fb and f are per example with every core busy
    for name, nfb, nf, r in passes:
        sec = r * (nfb * fb + nf * f)
        floor += sec
        lines.append(f"| {name} | {r} | {nfb} | {nf} | {sec:.2f} |")
    lines.append(f"| **suite** | | | | **{floor:.2f}** |")
    verdict = ["", "| budget | seconds | floor / budget | verdict |", "|---|---:|---:|---|"]
    for item in args.budget:
        name, _, sec = item.rpartition("=")
        budget = float(sec)
        verdict.append(f"| {name} | {budget:.2f} | {floor / budget:.2f} | "
                       + ("no AutoAttack-configured evaluation fits" if floor > budget else "not ruled out") + " |")
    head = [
        "# The floor of an AutoAttack-configured evaluation: model passes alone", "",
        "Generated by `.venv/bin/python benchmarks/adversarial_floor.py --rows " + args.rows
        + f" --model {args.model}" + "".join(f' --budget "{b}"' for b in args.budget) + "`.",
        "",
        (f"Model: the {args.model} small-cnn of `benchmarks/adversarial.py` on 8x8 digits "
         f"({sum(p.numel() for p in model.parameters())} parameters); torch {torch.__version__}, Python "
         f"{platform.python_version()}, load average {tuple(round(v, 1) for v in os.getloadavg())}. Best of 3 x 60 "
         f"passes per setting. Cheapest per example over chunks {list(CHUNKS)} and over 1 thread per core "
         f"(perfect scaling over {args.cores} processes) or {args.cores} threads: forward + input gradient "
         f"{fb * 1e6 * args.cores:.2f} core-us per example ({best_fb[0]} rows, {best_fb[1]} thread(s)), forward "
         f"{f * 1e6 * args.cores:.2f} core-us ({best_f[0]} rows, {best_f[1]} thread(s)). The floor counts no attack "
         "arithmetic, no Python and no early exit of robust examples (there is none: only broken "
         "examples leave an attack)."), "",
    ]
    text = "\n".join(head + lines + verdict) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
