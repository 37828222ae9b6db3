"""Adversarial training benchmark: every robustlab training method on digits and breast-cancer.

For each task, method and seed: train an MLP with the method (robustlab.training.Trainer), then
measure on the test split the clean accuracy, the PGD-20 robust accuracy
(robustlab.adversarial.gradient.pgd, one random start) and the robust accuracy under AutoAttack's
standard suite (robustlab.adversarial.evaluate.evaluate: APGD-CE, APGD-T, FAB-T, Square) at two
radii (half the training eps, and the training eps), plus the training wall time.

    .venv/bin/python benchmarks/adversarial_training.py            # full: ~10 min on 2 cores
    .venv/bin/python benchmarks/adversarial_training.py --quick    # 1 seed, 2 tasks, short

Writes docs/benchmarks/adversarial_training.md (table: mean +- std over seeds) and
docs/benchmarks/adversarial_training.jsonl (one row per task, method, seed and eps).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT_MD = ROOT / "docs" / "benchmarks" / "adversarial_training.md"
OUT_JSONL = ROOT / "docs" / "benchmarks" / "adversarial_training.jsonl"

#: task -> (training eps (linf), epochs, learning rate); the evaluation radii are eps/2 and eps.
TASKS: dict[str, tuple[float, int, float]] = {
    "digits": (0.1, 8, 1e-2),
    "breast-cancer": (0.05, 20, 1e-2),
}

#: AutoAttack suite per task. On tabular inputs "standard" runs without Square (its square
#: windows need images; evaluate warns and runs APGD-CE -> APGD-T -> FAB-T).
SUITES: dict[str, str] = {"digits": "standard", "breast-cancer": "standard"}


def methods(eps: float) -> dict[str, tuple[str, dict[str, Any]]]:
    """Benchmark name -> (registered method, options); PGD-style methods use 5 inner steps."""
    steps = {"num_steps": 5}
    return {
        "ce": ("ce", {}),
        "gaussian-augment": ("gaussian-augment", {"sigma": eps}),
        "pgd-at": ("pgd-at", {"eps": eps, **steps}),
        "pgd-at + awp": ("pgd-at", {"eps": eps, "awp_gamma": 5e-3, **steps}),
        "pgd-at + gairat": ("pgd-at", {"eps": eps, "reweight": "gair", **steps}),
        "trades": ("trades", {"eps": eps, **steps}),
        "trades + awp": ("trades", {"eps": eps, "awp_gamma": 5e-3, **steps}),
        "mart": ("mart", {"eps": eps, **steps}),
        "fast-at": ("fast-at", {"eps": eps}),
        "fast-at + gradalign": ("fast-at", {"eps": eps, "grad_align_lambda": 0.2}),
        "vat": ("vat", {"eps": 4 * eps}),  # an L2 radius: 4x the linf eps
    }


def run_one(task: str, name: str, seed: int, quick: bool, suite_examples: int) -> list[dict[str, Any]]:
    """One training run and its evaluation; a failure is recorded as a row, not raised."""
    try:
        return _run_one(task, name, seed, quick, suite_examples)
    except Exception as exc:  # noqa: BLE001  (a diverged run is a result of the benchmark)
        return [{"task": task, "method": name, "seed": seed, "error": f"{type(exc).__name__}: {exc}"}]


def _run_one(task: str, name: str, seed: int, quick: bool, suite_examples: int) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    from robustlab import zoo
    from robustlab.adversarial.evaluate import evaluate
    from robustlab.adversarial.gradient import pgd
    from robustlab.training import TrainConfig, Trainer, build_objective

    eps, epochs, lr = TASKS[task]
    if quick:
        epochs = max(2, epochs // 4)
    method, params = methods(eps)[name]
    train, test = zoo.load_splits(task)
    model, _ = zoo.build_for_data("mlp", train, seed=seed)
    config = TrainConfig(epochs=epochs, batch_size=64, optimizer="adamw", lr=lr, weight_decay=5e-4, seed=seed)
    started = time.perf_counter()
    with torch.random.fork_rng():
        result = Trainer(model, build_objective(method, **params), config).fit(train)
    seconds = time.perf_counter() - started
    model.eval()
    x, y = test.tensors()
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    rows = []
    for eval_eps in (eps / 2, eps):
        g = torch.Generator().manual_seed(seed)
        pgd_acc = float(pgd(model, x, y, eps=eval_eps, num_steps=20, generator=g).robust.float().mean())
        t = time.perf_counter()
        xs, ys = x[:suite_examples], y[:suite_examples]
        suite = evaluate(model, xs, ys, eps=eval_eps, suite=SUITES[task], generator=torch.Generator().manual_seed(seed))
        rows.append({"task": task, "method": name, "objective": method, "params": params, "seed": seed,
                     "epochs": epochs, "train_seconds": round(seconds, 2), "eval_eps": eval_eps,
                     "train_eps": eps, "clean_acc": clean, "pgd20_acc": pgd_acc,
                     "suite": SUITES[task], "suite_acc": suite.robust_accuracy, "eval_seconds": round(time.perf_counter() - t, 2),
                     "n_test": int(y.shape[0]), "n_suite": int(ys.shape[0]),
                     "stopped_early": len(result.history) < epochs})
    return rows


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def write_markdown(rows: list[dict[str, Any]], args: argparse.Namespace, wall: float, load: tuple[float, ...]) -> None:
    lines = ["# Adversarial training benchmark", "",
             "Generated by `benchmarks/adversarial_training.py"
             + (" --quick" if args.quick else "") + "`. "
             f"{len(args.seeds)} seed(s) ({', '.join(map(str, args.seeds))}); MLP (`zoo.build_for_data('mlp')`), "
             "AdamW, cosine schedule, batch 64; PGD-style methods use 5 inner steps of eps/4.", "",
             "Columns: clean test accuracy and robust accuracy under PGD-20 (one random start, step "
             "2.5·eps/20) on the whole test split; robust accuracy under an AutoAttack suite "
             "(`robustlab.adversarial.evaluate`) on the first "
             f"{rows[0]['n_suite'] if rows else '-'} test examples: `standard` (APGD-CE → APGD-T → FAB-T → "
             "Square) for digits and the same without Square for breast-cancer, whose tabular inputs Square "
             "does not take; both at two linf radii. Training wall time in seconds (one torch thread per "
             f"run, {args.workers} runs in parallel). Mean ± std over seeds.", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
             f"{torch.__version__}; total wall time {wall / 60:.1f} min; 1-min load average at the start "
             f"{load[0]:.1f} (a load far above the core count means the machine was shared and the "
             "times are inflated).", ""]
    failures = [r for r in rows if "error" in r]
    rows = [r for r in rows if "error" not in r]
    for task in TASKS:
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        eps = TASKS[task][0]
        lines += [f"## {task} (train eps = {eps:g}, {task_rows[0]['epochs']} epochs)", "",
                  f"| method | clean | PGD-20 @ {eps / 2:g} | {SUITES[task]} @ {eps / 2:g} | PGD-20 @ {eps:g} | "
                  f"{SUITES[task]} @ {eps:g} | train s |",
                  "|---|---|---|---|---|---|---|"]
        for name in methods(eps):
            sel = [r for r in task_rows if r["method"] == name]
            if not sel:
                continue
            lo = [r for r in sel if r["eval_eps"] == eps / 2]
            hi = [r for r in sel if r["eval_eps"] == eps]
            cells = [_mean_std([r["clean_acc"] for r in lo]),
                     _mean_std([r["pgd20_acc"] for r in lo]), _mean_std([r["suite_acc"] for r in lo]),
                     _mean_std([r["pgd20_acc"] for r in hi]), _mean_std([r["suite_acc"] for r in hi]),
                     f"{statistics.mean(r['train_seconds'] for r in lo):.1f}"]
            flag = " (stopped early)" if any(r["stopped_early"] for r in sel) else ""
            lines.append(f"| {name}{flag} | " + " | ".join(cells) + " |")
        lines.append("")
    if failures:
        lines += ["## Failed runs", ""] + [f"- {r['task']}, {r['method']}, seed {r['seed']}: {r['error']}"
                                           for r in failures] + [""]
    lines += ["## Methods", "",
              "All are `robustlab train --method NAME` objectives (options with `--method-param KEY=VALUE`, "
              "radius with `--eps`); `history.json` holds the clean and PGD-10 robust test accuracy of every "
              "epoch (`val_acc`, `val_robust_acc`).", "",
              "| name here | method and options | paper |",
              "|---|---|---|",
              "| pgd-at | `pgd-at` (`eps_warmup_epochs` for a linear eps ramp) | Madry et al. 2018 |",
              "| pgd-at + awp | `pgd-at`, `awp_gamma=5e-3` | Wu et al. 2020 (AWP) |",
              "| pgd-at + gairat | `pgd-at`, `reweight=gair` (from half the run) | Zhang et al. 2021 (GAIRAT) |",
              "| trades (+ awp) | `trades`, `beta=6` (`awp_gamma=5e-3`) | Zhang et al. 2019, Eq. 5 |",
              "| mart | `mart`, `lam=6` | Wang et al. 2020, Eq. 9 |",
              "| fast-at | `fast-at` (FGSM, random start, step 1.25 eps; catastrophic-overfitting watchdog) | "
              "Wong et al. 2020 |",
              "| fast-at + gradalign | `fast-at`, `grad_align_lambda=0.2` | Andriushchenko & Flammarion 2020 |",
              "| vat | `vat` (L2 `eps`, xi 1e-6, 1 power iteration; `unlabeled=` for semi-supervised) | "
              "Miyato et al. 2018 |",
              "| gaussian-augment | `gaussian-augment`, `sigma` | Cohen et al. 2019 (noise training) |",
              "", "Adversarial fine-tuning of a trained model (Jeddi et al. 2020, \"slow start, fast decay\"): "
              "`robustlab train --init MODEL_DIR --method pgd-at --eps E --schedule linear-decay --warmup-epochs K`.",
              ""]
    lines += ["## Notes", "",
              "- `gaussian-augment` is `robustlab.corruptions.augment` (sigma = train eps), listed as a baseline.",
              "- `vat` uses an L2 radius of 4x the linf eps (VAT's threat model is L2); it is a smoothness "
              "regulariser, not a linf defence.",
              "- PGD-20 is an upper bound on robust accuracy; the suite is the number to report (on its subset; "
              "PGD-20 covers the whole test split, so the two columns are on different examples). A PGD-20 "
              "accuracy well above the suite's would point to gradient masking.",
              "- Small tasks and short schedules: the ranking of methods on CIFAR-scale problems need not match.",
              ""]
    OUT_MD.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, a quarter of the epochs, suites on 50 examples")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=None, help="subset of method names")
    args = parser.parse_args()
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    suite_examples = 50 if args.quick else 100
    load = os.getloadavg()
    jobs = [(task, name, seed, args.quick, suite_examples) for task in TASKS for name in methods(TASKS[task][0])
            if args.methods is None or name in args.methods for seed in args.seeds]
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for out in pool.map(run_one, *zip(*jobs)):
            rows.extend(out)
            r = out[-1]
            if "error" in r:
                print(f"{r['task']:14s} {r['method']:22s} seed {r['seed']} FAILED: {r['error']}", flush=True)
                continue
            print(f"{r['task']:14s} {r['method']:22s} seed {r['seed']} clean {r['clean_acc']:.3f} "
                  f"pgd {r['pgd20_acc']:.3f} {r['suite']} {r['suite_acc']:.3f} ({r['train_seconds']:.1f}s train)",
                  flush=True)
    wall = time.perf_counter() - started
    with open(OUT_JSONL, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    write_markdown(rows, args, wall, load)
    print(f"wrote {OUT_MD} ({wall / 60:.1f} min)")


if __name__ == "__main__":
    main()
