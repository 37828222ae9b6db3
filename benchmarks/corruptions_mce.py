"""Benchmark: corruption error of a standard and an AugMix-trained small CNN on digits.

Trains ``small-cnn`` on the digits training split with plain cross entropy ("standard") and with
AugMix + Jensen-Shannon consistency (``--method augmix``, the paper's defaults: width 3, depth 1-3,
severity 3, alpha 1, lambda 12, default operations), same epochs/optimizer/seed, then evaluates
both on the fixed 360-image test split under the 19 ImageNet-C corruptions at severities 1-5
(preset chosen by ``preset_for``: "mnist" for 8 px grey images) and the 15 MNIST-C corruptions.

Reported per seed and as mean: clean error; unnormalised mean corruption error (mean over all
19 x 5 cells, the CIFAR-10-C number AugMix reports); the AugMix model's mCE and relative mCE
*normalised by the standard model* (AlexNet's ImageNet-C errors are meaningless for 8 px digits,
so the standard model plays AlexNet's role; the standard model scores 1.0 by definition); mean
MNIST-C error.

Run: .venv/bin/python benchmarks/corruptions_mce.py [--seeds 0 1 2] [--epochs 15]
Writes docs/benchmarks/corruptions_mce.md (and one JSON line per seed to corruptions_mce.jsonl, so
seeds can run in separate processes: then ``--seeds --all-stored`` renders the table of all).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT_MD = ROOT / "docs" / "benchmarks" / "corruptions_mce.md"
OUT_JSONL = ROOT / "docs" / "benchmarks" / "corruptions_mce.jsonl"


def _stored() -> list[dict]:  # type: ignore[type-arg]
    if not OUT_JSONL.is_file():
        return []
    return [json.loads(line) for line in OUT_JSONL.read_text().splitlines() if line.strip()]


def _store(row: dict) -> None:  # type: ignore[type-arg]
    """Keep one line per (seed, epochs); other processes may append theirs concurrently."""
    rows = [r for r in _stored() if (r["seed"], r["epochs"]) != (row["seed"], row["epochs"])] + [row]
    OUT_JSONL.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSONL.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _train(method: str, seed: int, epochs: int):  # type: ignore[no-untyped-def]
    from robustlab import zoo
    from robustlab.models import build_model
    from robustlab.training import TrainConfig, Trainer, build_objective

    train, test = zoo.load_splits("digits")
    norm = zoo._normalisation(train)
    model = build_model("small-cnn", train.input_shape, train.num_classes, seed=seed, **norm)
    config = TrainConfig(epochs=epochs, batch_size=64, optimizer="adamw", lr=3e-3, weight_decay=5e-4,
                         schedule="cosine", seed=seed)
    start = time.perf_counter()
    result = Trainer(model, build_objective(method), config).fit(train)
    return result.model, test, time.perf_counter() - start


def _mnist_c_error(model, test, seed: int) -> float:  # type: ignore[no-untyped-def]
    from robustlab.corruptions import MNIST_C_CORRUPTIONS, corrupt_mnist_c
    from robustlab.models import predict_logits

    x, y = test.tensors()
    errs = []
    for i, name in enumerate(MNIST_C_CORRUPTIONS):
        xc = corrupt_mnist_c(x, name, generator=torch.Generator().manual_seed(seed * 1000 + i))
        errs.append(float((predict_logits(model, xc).argmax(1) != y).double().mean()))
    return float(np.mean(errs))


def main() -> None:
    from robustlab.corruptions import IMAGE_CORRUPTIONS, evaluate_corruptions

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--all-stored", action="store_true",
                        help="Report every seed stored in the .jsonl (runs can be split across processes); "
                             "--seeds [] with it only re-renders the table.")
    args = parser.parse_args()
    for seed in args.seeds:
        reports, times, mnist_c = {}, {}, {}
        for method in ("ce", "augmix"):
            model, test, seconds = _train(method, seed, args.epochs)
            reports[method] = evaluate_corruptions(model, test, corruptions=IMAGE_CORRUPTIONS,
                                                   generator=torch.Generator().manual_seed(seed))
            mnist_c[method] = _mnist_c_error(model, test, seed)
            times[method] = seconds
        std, aug = reports["ce"], reports["augmix"]
        base = std.as_baseline()
        row = {
            "seed": seed, "epochs": args.epochs,
            "clean_std": std.clean_error, "clean_aug": aug.clean_error,
            "mce_std": std.mean_corruption_error(), "mce_aug": aug.mean_corruption_error(),
            # CE divides by the standard model's error: corruptions it never gets wrong (saturate is
            # the identity on grey images) are left out and listed
            "norm_mce_aug": aug.mce(baseline={c: e for c, e in base.items() if e > 0},
                                    corruptions=[c for c in IMAGE_CORRUPTIONS if base[c] > 0]),
            "norm_excluded": [c for c in IMAGE_CORRUPTIONS if base[c] <= 0],
            # relative CE divides by the standard model's degradation: only where it has one
            "rel_mce_aug": aug.relative_mce(baseline={c: e for c, e in base.items() if e > 0},
                                            baseline_clean_error=std.clean_error,
                                            corruptions=[c for c in IMAGE_CORRUPTIONS
                                                         if base[c] > std.clean_error]),
            "rel_excluded": [c for c in IMAGE_CORRUPTIONS if base[c] <= std.clean_error],
            "mnistc_std": mnist_c["ce"], "mnistc_aug": mnist_c["augmix"],
            "t_std": times["ce"], "t_aug": times["augmix"],
            "per_corruption": {c: (std.corruption_errors()[c], aug.corruption_errors()[c])
                               for c in IMAGE_CORRUPTIONS},
        }

        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k not in ("per_corruption", "rel_excluded", "norm_excluded")})
        _store(row)
    per_seed = [r for r in _stored()
                if r["epochs"] == args.epochs and (r["seed"] in args.seeds or args.all_stored)]
    per_seed.sort(key=lambda r: r["seed"])

    for r in per_seed:  # saturate is the identity on grey images: its CE is a clean-error ratio
        pairs = [v for c, v in r["per_corruption"].items() if c != "saturate" and v[0] > 0]
        r["norm_mce_aug_nosat"] = statistics.fmean(a / s for s, a in pairs)

    def mean(key: str) -> float:
        return statistics.fmean(r[key] for r in per_seed)

    def spread(key: str) -> str:
        vals = [r[key] for r in per_seed]
        return f"{100 * statistics.fmean(vals):.2f} ± {100 * statistics.pstdev(vals):.2f}"

    lines = [
        "# Corruption error of a standard and an AugMix-trained small CNN on digits",
        "",
        ("Command: one process per seed, `.venv/bin/python benchmarks/corruptions_mce.py --seeds S "
         f"--epochs {args.epochs}` for S in {sorted(r['seed'] for r in per_seed)}, then `--seeds --all-stored "
         f"--epochs {args.epochs}` to render this page" if args.all_stored else
         f"Command: `.venv/bin/python benchmarks/corruptions_mce.py --seeds {' '.join(map(str, args.seeds))} "
         f"--epochs {args.epochs}`"),
        "",
        ("Train times were measured on a 2-core machine shared with other jobs (load average above 10), "
        "so they are inflated and only their ratio means something. `saturate` is the identity on grey "
        "images (no saturation to change), so its error equals the clean error."),
        "",
        (f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}. "
        "Model: small-cnn, AdamW lr 3e-3, cosine, batch 64, same seed for both methods. "
        "Test: the fixed 360-image digits test split (8 x 8 grey), 19 ImageNet-C corruptions x "
        "severities 1-5 with the `mnist` preset, and the 15 MNIST-C corruptions."),
        "",
        ("Errors in % (mean ± std over seeds). The mCE and relative mCE of the AugMix model are "
        "normalised by the *standard* model (which scores 100 by definition), since AlexNet's "
        "ImageNet-C errors do not apply to 8 px digits."),
        "",
        ("| model | clean error | mean corruption error (19 x 5) | mCE vs standard | relative mCE vs standard "
        "| mean MNIST-C error | train time / seed |"),
        "|---|---|---|---|---|---|---|",
        (f"| standard (ce) | {spread('clean_std')} | {spread('mce_std')} | 100 | 100 | {spread('mnistc_std')} "
        f"| {mean('t_std'):.0f} s |"),
        (f"| AugMix + JSD | {spread('clean_aug')} | {spread('mce_aug')} | {spread('norm_mce_aug')} "
        f"| {spread('rel_mce_aug')} | {spread('mnistc_aug')} | {mean('t_aug'):.0f} s |"),
        "",
        "On grey images `saturate` changes nothing, so its CE is just the ratio of clean errors; "
        "without it the AugMix mCE vs standard is " + spread("norm_mce_aug_nosat") + ".",
        "",
        "mCE vs standard leaves out corruptions the standard model never gets wrong (CE divides by "
        "its error); left out, per seed: " + "; ".join(
            f"seed {r['seed']}: {', '.join(r['norm_excluded']) or 'none'}" for r in per_seed) + ".",
        "",
        "Relative mCE leaves out corruptions that do not raise the standard model's error (it divides "
        "by that rise); left out, per seed: " + "; ".join(
            f"seed {r['seed']}: {', '.join(r['rel_excluded']) or 'none'}" for r in per_seed) + ".",
        "",
        "Per corruption (mean error over severities, averaged over seeds; standard → AugMix):",
        "",
        "| corruption | standard | AugMix | change |",
        "|---|---|---|---|",
    ]
    from robustlab.corruptions import IMAGE_CORRUPTIONS as names

    for c in names:
        s = statistics.fmean(r["per_corruption"][c][0] for r in per_seed)
        a = statistics.fmean(r["per_corruption"][c][1] for r in per_seed)
        lines.append(f"| {c} | {100 * s:.1f} | {100 * a:.1f} | {100 * (a - s):+.1f} |")
    lines += ["", "Per seed (errors in %):", "",
              "| seed | clean std | clean AugMix | mCE std | mCE AugMix | normalised mCE AugMix |",
              "|---|---|---|---|---|---|"]
    for r in per_seed:
        lines.append(f"| {r['seed']} | {100 * r['clean_std']:.2f} | {100 * r['clean_aug']:.2f} | "
                     f"{100 * r['mce_std']:.2f} | {100 * r['mce_aug']:.2f} | {100 * r['norm_mce_aug']:.1f} |")
    text = "\n".join(lines) + "\n"
    OUT_MD.parent.mkdir(parents=True, exist_ok=True)
    OUT_MD.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
