"""Accuracy-robustness trade-off on digits: weight interpolation vs adaptive smoothing.

Two small CNNs of one architecture are trained on the built-in digits, a standard one
(cross-entropy) and a robust one (PGD-AT, Linf eps 0.1, 5 steps). On the same test examples, with
the same attack randomness (``fast`` suite: APGD-CE + APGD-T at Linf eps 0.1):

1. weight interpolation (robustlab.repair.interpolate): (1 - alpha) * standard + alpha * robust;
2. adaptive smoothing with a fixed alpha (robustlab.repair.adaptive.MixedClassifier, Bai et al.):
   log((1 - alpha) softmax(standard) + alpha softmax(robust)), attacked end to end;
3. adaptive smoothing with a mixing network fitted by fit_mixing_network (robust model's
   penultimate features, composite loss, adaptive PGD), attacked end to end (through the network).

Run::

    .venv/bin/python benchmarks/repair_adaptive.py            # full (a few minutes on 2 cores)
    .venv/bin/python benchmarks/repair_adaptive.py --quick    # fewer epochs and examples

Writes docs/benchmarks/repair_adaptive.md (``--quick`` prints it instead unless ``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT_MD = ROOT / "docs" / "benchmarks" / "repair_adaptive.md"
EPS = 0.1
ALPHAS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
#: The mixing network is small and reads standardised features; on a few hundred digits the
#: library default (1e-3) moves it little in a few epochs.
FIT_LR = 1e-2


def train_models(epochs: int, seed: int) -> tuple[Any, Any, Any, Any]:
    from robustlab import zoo
    from robustlab.training import TrainConfig, Trainer, build_objective

    train, test = zoo.load_splits("digits")
    out = []
    for method, params in (("ce", {}), ("pgd-at", {"eps": EPS, "num_steps": 5})):
        net, _ = zoo.build_for_data("small-cnn", train, seed=seed)
        res = Trainer(net, build_objective(method, **params),
                      TrainConfig(epochs=epochs, batch_size=64, seed=seed)).fit(train)
        out.append(res.model.eval())
    return out[0], out[1], train, test


def run(args: argparse.Namespace) -> dict[str, Any]:
    from robustlab.adversarial import evaluate
    from robustlab.repair import (
        MixedClassifier,
        fit_mixing_network,
        interpolation_curve,
    )

    t0 = time.perf_counter()
    standard, robust, train, test = train_models(args.epochs, args.seed)
    res: dict[str, Any] = {"train_seconds": time.perf_counter() - t0}
    x, y = test.tensors()
    x, y = x[:args.examples], y[:args.examples]

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(args.seed)

    t0 = time.perf_counter()
    curve = interpolation_curve(standard, robust, x, y, alphas=ALPHAS, eps=EPS, suite="fast", generator=gen())
    res["interpolation"] = {"clean": curve.clean_accuracy, "robust": curve.robust_accuracy,
                            "seconds": time.perf_counter() - t0, "selected": curve.select_alpha()}
    t0 = time.perf_counter()
    clean, rob = [], []
    for alpha in ALPHAS:
        r = evaluate(MixedClassifier(standard, robust, alpha=alpha), x, y, eps=EPS, suite="fast", generator=gen())
        clean.append(r.clean_accuracy)
        rob.append(r.robust_accuracy)
    res["fixed"] = {"clean": clean, "robust": rob, "seconds": time.perf_counter() - t0}
    xt, yt = train.tensors()
    t0 = time.perf_counter()
    fit = fit_mixing_network(standard, robust, (xt[:args.fit_examples], yt[:args.fit_examples]), eps=EPS,
                             epochs=args.fit_epochs, lr=FIT_LR, generator=gen())
    fit_seconds = time.perf_counter() - t0
    r = evaluate(fit.classifier, x, y, eps=EPS, suite="fast", generator=gen())
    with torch.no_grad():
        alpha_test = float(fit.classifier.mixing_weights(x).mean())
    res["network"] = {"clean": r.clean_accuracy, "robust": r.robust_accuracy, "fit_seconds": fit_seconds,
                      "losses": fit.losses, "clean_alpha": fit.clean_alpha, "adv_alpha": fit.adversarial_alpha,
                      "test_alpha": alpha_test}
    return res


def to_markdown(res: dict[str, Any], args: argparse.Namespace) -> str:
    it, fx, nw = res["interpolation"], res["fixed"], res["network"]
    lines = [
        "# Weight interpolation vs adaptive smoothing on digits", "",
        (f"`benchmarks/repair_adaptive.py{' --quick' if args.quick else ''}` on {platform.machine()} "
         f"({torch.get_num_threads()} thread(s)), torch {torch.__version__}. small-cnn trained for {args.epochs} "
         f"epochs with cross-entropy (standard) and with PGD-AT (Linf eps {EPS}, 5 steps; robust), seed "
         f"{args.seed} ({res['train_seconds']:.0f} s). Accuracies on the first {args.examples} test digits; "
         f"robust accuracy under the `fast` suite (APGD-CE + APGD-T, AutoAttack's settings) at Linf eps {EPS}, "
         "the same attack randomness for every row (common random numbers)."), "",
        "| alpha | interpolation clean | interpolation robust | mixed (fixed alpha) clean | mixed robust |",
        "|---:|---:|---:|---:|---:|",
    ]
    for i, a in enumerate(ALPHAS):
        lines.append(f"| {a:g} | {it['clean'][i]:.3f} | {it['robust'][i]:.3f} | {fx['clean'][i]:.3f} | "
                     f"{fx['robust'][i]:.3f} |")
    lines += [
        "",
        (f"Interpolation: alpha 0 is the standard model, 1 the robust one; a RiFT-style pick (best clean accuracy "
         f"at the best robust accuracy on the grid) is alpha = {it['selected']:g}. Curve: "
         f"{it['seconds']:.1f} s; fixed-alpha rows: {fx['seconds']:.1f} s."),
        "",
        "## Adaptive smoothing with a fitted mixing network",
        "",
        (f"`fit_mixing_network` on {args.fit_examples} training digits, {args.fit_epochs} epochs (lr {FIT_LR:g}), robust "
         f"model's penultimate features, composite loss (1.5 BCE + 0.3 BCE x CE), adversarial half by a "
         f"10-step PGD against the current mixed model ({nw['fit_seconds']:.0f} s). Epoch losses: "
         f"{', '.join(f'{v:.3f}' for v in nw['losses'])}."),
        "",
        "| model | clean | robust (fast suite, attacked through the mixing network) |",
        "|---|---:|---:|",
        f"| standard (alpha 0) | {fx['clean'][0]:.3f} | {fx['robust'][0]:.3f} |",
        f"| robust (alpha 1) | {fx['clean'][-1]:.3f} | {fx['robust'][-1]:.3f} |",
        f"| mixing network | {nw['clean']:.3f} | {nw['robust']:.3f} |",
        "",
        (f"Mean alpha(x) on clean training inputs {nw['clean_alpha']:.3f}, on adversarial ones "
         f"{nw['adv_alpha']:.3f}, on the clean test inputs {nw['test_alpha']:.3f}."),
        "",
        ("These are small 8x8 digits models: the numbers show the three methods run end to end under "
         "a strong adaptive attack, not how they rank on CIFAR-scale models (Bai et al. report "
         "CIFAR-10/100 numbers)."),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    args.epochs = 3 if args.quick else 8
    args.examples = 60 if args.quick else 200
    args.fit_examples = 256 if args.quick else 512
    args.fit_epochs = 2 if args.quick else 8
    res = run(args)
    text = to_markdown(res, args)
    out = args.out if args.out is not None else (None if args.quick else OUT_MD)
    if out is None:
        print(text)
        return
    from robustlab._io import atomic_write_text

    atomic_write_text(out, text)
    print(text)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
