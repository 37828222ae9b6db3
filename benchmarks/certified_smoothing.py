"""Randomized smoothing benchmark: certified accuracy on digits at sigma 0.12 / 0.25 / 0.5.

For each sigma: train an MLP on the digits training split with the ``gaussian-augment``
objective at that sigma (robustlab.training.Trainer; Cohen et al. 2019 train at the sigma they
certify with), then run CERTIFY (robustlab.certified.smoothing.certify, n0 = 100, n = 10,000,
alpha = 0.001) on the test split and report the certified accuracy at several L2 radii, the
abstention rate, the average certified radius and the wall time per certified example.

    .venv/bin/python benchmarks/certified_smoothing.py            # full: 360 test digits, ~2-4 min
    .venv/bin/python benchmarks/certified_smoothing.py --quick    # 60 digits, n = 1,000, 2 epochs

Writes docs/benchmarks/certified_smoothing.md (``--quick`` writes nothing unless ``--out``).
Digits are 8x8 grey images in [0, 1] (d = 64), so radii are in those pixel units.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT_MD = ROOT / "docs" / "benchmarks" / "certified_smoothing.md"
SIGMAS = (0.12, 0.25, 0.5)
RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
EPOCHS = 30
THREADS = 2


def run_sigma(sigma: float, *, n: int, n0: int, alpha: float, examples: int, epochs: int,
              seed: int) -> dict:
    from robustlab import zoo
    from robustlab.certified import (
        average_certified_radius,
        certified_accuracy_curve,
        certify,
    )
    from robustlab.training import TrainConfig, Trainer, build_objective

    train, test = zoo.load_splits("digits")
    model, _ = zoo.build_for_data("mlp", train, seed=seed)
    config = TrainConfig(epochs=epochs, batch_size=64, optimizer="adamw", lr=3e-3, weight_decay=5e-4,
                         seed=seed)
    t0 = time.perf_counter()
    Trainer(model, build_objective("gaussian-augment", sigma=sigma), config).fit(train)
    train_s = time.perf_counter() - t0
    model.eval()
    x, y = test.tensors()
    x, y = x[:examples], y[:examples]
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
        g = torch.Generator().manual_seed(seed)
        noisy = float((model(x + sigma * torch.randn(x.shape, generator=g)).argmax(1) == y).float().mean())
    t0 = time.perf_counter()
    cert = certify(model, x, sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=10_000,
                   generator=torch.Generator().manual_seed(seed + 1))
    certify_s = time.perf_counter() - t0
    _, acc = certified_accuracy_curve(cert, y, RADII)
    return {"sigma": sigma, "clean": clean, "noisy": noisy, "acc": acc.tolist(),
            "abstain": cert.abstention_rate, "acr": average_certified_radius(cert, y),
            "train_s": train_s, "certify_s": certify_s, "per_example_ms": 1e3 * certify_s / len(y),
            "examples": len(y)}


def to_markdown(rows: list[dict], args: argparse.Namespace, total_s: float) -> str:
    head = "| sigma | base acc (clean) | base acc (noisy) | " + " | ".join(f"r = {r}" for r in RADII) + \
        " | abstain | ACR | certify ms / example |"
    sep = "|" + "---|" * (5 + len(RADII) + 1)
    lines = [
        "# Randomized smoothing on digits (robustlab.certified.smoothing)",
        "",
        "Certified L2 accuracy of the smoothed classifier (Cohen, Rosenfeld & Kolter, ICML 2019) of an",
        f"MLP (64-256-256-10) trained for {args.epochs} epochs with the `gaussian-augment` objective at the",
        ("sigma it is certified with (AdamW, lr 3e-3, batch 64). CERTIFY with "
         f"n0 = {args.n0}, n = {args.n:,}, alpha = {args.alpha}, 10,000 noisy copies per forward pass, on the "
         f"first {rows[0]['examples']} examples of the digits test split (the whole split has 360)."),
        "Radii are L2 distances in [0, 1] pixel units of the 8x8 images (d = 64). Certified accuracy at r",
        "= fraction of examples certified correct with radius >= r (abstentions count as wrong); r = 0 is",
        "the smoothed classifier's accuracy with abstention. ACR = average certified radius (wrong = 0).",
        "",
        head, sep,
    ]
    train_times = ", ".join(f"{r['train_s']:.1f} s" for r in rows)
    sigmas = ", ".join(str(r["sigma"]) for r in rows)
    for r in rows:
        cells = [f"{r['sigma']}", f"{r['clean']:.3f}", f"{r['noisy']:.3f}", *[f"{a:.3f}" for a in r["acc"]],
                 f"{r['abstain']:.3f}", f"{r['acr']:.3f}", f"{r['per_example_ms']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Training time per model: {train_times} (sigma {sigmas}). Total wall time {total_s:.0f} s.",
        (f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
         f"{torch.get_num_threads()} torch threads, shared with other jobs (timings are noisy)."),
        (f"Upper limit on any radius with n = {args.n:,}, alpha = {args.alpha}: "
         "sigma * Phi^-1(alpha^(1/n)), i.e. "
         + ", ".join(f"{s * _max_z(args.n, args.alpha):.2f} at sigma {s}" for s in SIGMAS) + "."),
        "",
        "Command: `.venv/bin/python benchmarks/certified_smoothing.py" + (" --quick" if args.quick else "") + "`"
        " (timings on a machine shared with other jobs vary by 2x or more between runs).",
        "",
    ]
    return "\n".join(lines)


def _max_z(n: int, alpha: float) -> float:
    from scipy import stats

    return float(stats.norm.ppf(alpha ** (1 / n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", THREADS)))
    args.n, args.n0, args.alpha = (1_000, 100, 0.001) if args.quick else (10_000, 100, 0.001)
    args.epochs = 2 if args.quick else EPOCHS
    examples = 60 if args.quick else 360
    started = time.perf_counter()
    rows = []
    for sigma in SIGMAS:
        row = run_sigma(sigma, n=args.n, n0=args.n0, alpha=args.alpha, examples=examples,
                        epochs=args.epochs, seed=args.seed)
        print(f"sigma={sigma}: acc@r={[f'{a:.3f}' for a in row['acc']]} abstain={row['abstain']:.3f} "
              f"acr={row['acr']:.3f} {row['per_example_ms']:.1f} ms/example (train {row['train_s']:.1f} s)",
              flush=True)
        rows.append(row)
    md = to_markdown(rows, args, time.perf_counter() - started)
    out = args.out or (None if args.quick else OUT_MD)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(md)
        print(f"wrote {out}")
    else:
        print(md)


if __name__ == "__main__":
    main()
