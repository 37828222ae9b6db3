"""Benchmark the label audit: which detector finds injected label flips, and at what cost.

For each task (digits images, breast-cancer tabular), noise type (symmetric, pair-flip,
instance-dependent of Xia et al. 2020) and rate (10/20/40%), and each seed, the labels are
corrupted with ``robustlab.label_noise`` and every detector is scored against the injected flips
(precision, recall, F1 of its ``mask``). Pipelines and what their wall time covers:

* ``cl-kfold``  — the cleanlab recipe: 5-fold cross-validation (5 trainings) for out-of-sample
  ``pred_probs``, then ``find_label_issues(filter_by="prune_by_noise_rate")``. robustlab's
  confident learning returns the same mask as cleanlab 2.x (asserted here on every run).
* ``kfold-ensemble`` — the same pipeline plus kNN on the out-of-sample features, rank-combined
  (``robustlab audit`` without the extra dynamics run).
* ``single-run``  — ONE training with per-example records; ``aum`` (threshold 0),
  ``small-loss`` (2-component GMM) and ``forgetting`` all read that run; ``single-run-ensemble``
  rank-combines AUM with kNN on the flattened inputs. One timing covers all of them.
* ``aum-threshold`` — Pleiss et al.'s full procedure: 2 trainings with K+1 outputs.
* ``knn-inputs`` — SimiFeat kNN vote on the flattened inputs: no training at all.

Budget (2 shared CPU cores): the MLP trains for fewer epochs than the zoo recipe (see EPOCHS);
the same settings are used by every pipeline, so the comparison is like for like. ``cpu s`` is
the process CPU time, steadier than wall time on a loaded machine. Results append to a JSONL file
(resumable); the table is rebuilt from it.

Run: .venv/bin/python benchmarks/label_audit.py [--tasks digits,breast-cancer] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT_MD = ROOT / "docs" / "benchmarks" / "label_audit.md"
OUT_JSONL = ROOT / "docs" / "benchmarks" / "label_audit.jsonl"

#: Per task: architecture parameters and training settings (scaled down from the zoo recipe).
SETTINGS = {
    "digits": {"hidden_sizes": [128], "epochs": 10, "batch_size": 64, "lr": 3e-3},
    "breast-cancer": {"hidden_sizes": [64], "epochs": 20, "batch_size": 32, "lr": 3e-3},
}
NOISES = ("symmetric", "pair", "instance")
RATES = (0.1, 0.2, 0.4)
FOLDS = 5


def _noisy_labels(ds, kind: str, rate: float, seed: int):
    from robustlab.label_noise import (
        instance_dependent_noise,
        pair_flip_noise,
        symmetric_noise,
    )

    g = torch.Generator().manual_seed(seed)
    if kind == "symmetric":
        return symmetric_noise(ds.labels, ds.num_classes, rate, generator=g)
    if kind == "pair":
        return pair_flip_noise(ds.labels, ds.num_classes, rate, generator=g)
    x, _ = ds.tensors()
    return instance_dependent_noise(x, ds.labels, ds.num_classes, rate, generator=g)


def _prf(mask: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    tp = float((mask & truth).sum())
    p = tp / max(1, int(mask.sum()))
    r = tp / max(1, int(truth.sum()))
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


class _Clock:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def run_one(task: str, kind: str, rate: float, seed: int) -> list[dict]:
    import cleanlab.filter

    from robustlab.data import load_dataset
    from robustlab.label_noise import (
        aum_issues,
        aum_threshold_issues,
        combine_by_rank,
        confident_learning_issues,
        cross_val_outputs,
        forgetting_issues,
        knn_issues,
        small_loss_issues,
        train_with_records,
    )
    from robustlab.models import ModelConfig
    from robustlab.training import TrainConfig

    s = SETTINGS[task]
    ds = load_dataset(task)
    noisy = _noisy_labels(ds, kind, rate, seed)
    data = ds.with_labels(noisy.labels)
    truth = noisy.noise_mask.numpy()
    labels = data.labels.numpy()
    from robustlab.zoo import _normalisation

    config = ModelConfig.for_model("mlp", data.input_shape, data.num_classes,
                                   params={"hidden_sizes": s["hidden_sizes"], **_normalisation(data)})
    train = TrainConfig(epochs=s["epochs"], batch_size=s["batch_size"], optimizer="adamw", lr=s["lr"],
                        weight_decay=1e-4, schedule="cosine", seed=seed)
    results: dict[str, tuple] = {}

    with _Clock() as c_kfold:
        out = cross_val_outputs(data, config, n_splits=FOLDS, seed=seed, train_config=train)
        cl = confident_learning_issues(labels, out.pred_probs)
    theirs = cleanlab.filter.find_label_issues(labels, out.pred_probs, filter_by="prune_by_noise_rate")
    assert np.array_equal(theirs, cl.mask), "robustlab and cleanlab confident learning differ"
    results["cl-kfold"] = (cl.mask, c_kfold)
    with _Clock() as c_ens:
        knn_oof = knn_issues(out.features, labels, num_classes=data.num_classes)
        ens = combine_by_rank({"cl": cl, "knn": knn_oof})
    results["kfold-ensemble"] = (ens.mask, _sum(c_kfold, c_ens))

    with _Clock() as c_inputs:
        x, _ = data.tensors()
        knn_in = knn_issues(x.reshape(len(data), -1), labels, num_classes=data.num_classes)
    results["knn-inputs"] = (knn_in.mask, c_inputs)

    with _Clock() as c_single:
        records = train_with_records(data, config, seed=seed, train_config=train).records
        aum = aum_issues(records)
        small = small_loss_issues(records)
        forget = forgetting_issues(records)
    for name, det in (("aum", aum), ("small-loss", small), ("forgetting", forget)):
        results[name] = (det.mask, c_single)
    with _Clock() as c_sens:
        sens = combine_by_rank({"aum": aum, "knn": knn_in})
    results["single-run-ensemble"] = (sens.mask, _sum(c_single, c_inputs, c_sens))

    with _Clock() as c_thr:
        thr = aum_threshold_issues(data, config, seed=seed, train_config=train)
    results["aum-threshold"] = (thr.mask, c_thr)

    rows = []
    for name, (mask, clock) in results.items():
        p, r, f = _prf(np.asarray(mask), truth)
        rows.append({"task": task, "noise": kind, "rate": rate, "seed": seed, "detector": name,
                     "precision": p, "recall": r, "f1": f, "wall_s": clock.wall, "cpu_s": clock.cpu,
                     "flagged": int(np.asarray(mask).sum()), "flips": int(truth.sum())})
    return rows


class _Sum:
    def __init__(self, wall: float, cpu: float) -> None:
        self.wall, self.cpu = wall, cpu


def _sum(*clocks) -> _Sum:
    return _Sum(sum(c.wall for c in clocks), sum(c.cpu for c in clocks))


def _load(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _table(rows: list[dict]) -> str:
    by = defaultdict(list)
    for r in rows:
        by[(r["task"], r["noise"], r["rate"], r["detector"])].append(r)
    detectors = ["cl-kfold", "kfold-ensemble", "aum", "small-loss", "forgetting", "knn-inputs",
                 "single-run-ensemble", "aum-threshold"]
    lines = ["| task | noise | rate | detector | precision | recall | F1 | cpu s | wall s | seeds |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for task in SETTINGS:
        for kind in NOISES:
            for rate in RATES:
                for det in detectors:
                    rs = by.get((task, kind, rate, det))
                    if not rs:
                        continue
                    def m(key, rs=rs):
                        vals = [r[key] for r in rs]
                        mean = statistics.fmean(vals)
                        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                        return mean, sd
                    p, r, f = m("precision"), m("recall"), m("f1")
                    lines.append(f"| {task} | {kind} | {rate:.0%} | {det} | {p[0]:.3f} | {r[0]:.3f} | "
                                 f"{f[0]:.3f} ± {f[1]:.3f} | {m('cpu_s')[0]:.1f} | {m('wall_s')[0]:.1f} | "
                                 f"{len(rs)} |")
    return "\n".join(lines)


def _verdict(rows: list[dict]) -> str:
    """Per detector and task: cells where its mean F1 >= cl-kfold's, mean F1 gap, cost ratios."""
    by = defaultdict(list)
    for r in rows:
        by[(r["task"], r["noise"], r["rate"], r["detector"])].append(r)
    out = [("| detector | task | cells with F1 >= cl-kfold | mean F1 - cl-kfold F1 | cpu time / cl-kfold | "
           "wall time / cl-kfold |"), "|---|---|---:|---:|---:|---:|"]
    tasks = [t for t in SETTINGS if any(k[0] == t for k in by)]
    for det in ["kfold-ensemble", "aum", "small-loss", "forgetting", "knn-inputs", "single-run-ensemble",
                "aum-threshold"]:
        for task in [*tasks, "all"]:
            cells = sorted({k[:3] for k in by if task in ("all", k[0])})
            wins, diffs, cpu_ratio, wall_ratio = 0, [], [], []
            for cell in cells:
                a, b = by.get((*cell, det)), by.get((*cell, "cl-kfold"))
                if not a or not b:
                    continue
                fa = statistics.fmean(r["f1"] for r in a)
                fb = statistics.fmean(r["f1"] for r in b)
                wins += fa >= fb
                diffs.append(fa - fb)
                cpu_ratio.append(statistics.fmean(r["cpu_s"] for r in a) / statistics.fmean(r["cpu_s"] for r in b))
                wall_ratio.append(statistics.fmean(r["wall_s"] for r in a)
                                  / statistics.fmean(r["wall_s"] for r in b))
            if diffs:
                name = f"**{det}**" if task == "all" else det
                out.append(f"| {name} | {task} | {wins} / {len(diffs)} | {statistics.fmean(diffs):+.3f} | "
                           f"{statistics.fmean(cpu_ratio):.2f} | {statistics.fmean(wall_ratio):.2f} |")
    return "\n".join(out)


FINDINGS = """**Verdict (honest).** The aim is met *on average*, not in every cell. Area under the margin
read from ONE training run (`aum`, 0.30x the wall time and CPU time of 5-fold CL) has a mean F1
0.009 above K-fold confident learning over the 18 (task, noise, rate) cells and is at least as
good in 13 of them: all 9 breast-cancer cells (+0.03 on average), but only 4 of 9 on digits,
where it trails by up to 0.06 at 10% noise (its recall is ~1 but it over-flags the hardest clean
digits). On digits the single-run ensemble (AUM + kNN on inputs, same cost) is at least as good as
CL in 8 of 9 cells, and kNN on raw pixels alone (no training, ~1% of the cost) in 7 of 9 — it is
the weakest detector on the 30-feature tabular task, so it is not a general answer. The cost ratio
of one run to five folds is ~0.25 in theory; measured per cell it ranges 0.23-0.44 on this shared
machine. Best F1 overall: CL combined with kNN on the out-of-sample features (`kfold-ensemble`,
same cost as CL, +0.023). AUM *with* threshold samples (the paper's full method, 2 runs) is
close to plain AUM on digits (-0.01 to -0.03) but fails on breast-cancer: with K = 2 a third of
the data is relabelled to the fake class, the network partly fits that class, the 99th
percentile of the threshold samples' AUM lands above most real examples' AUM and 83-96% of all
examples are flagged (precision 0.22 at 20% noise). The method is meant for many classes.

Note: with two classes (breast-cancer) exclusive symmetric noise and pair-flip noise are the same
process, so those rows coincide."""


def write_markdown(rows: list[dict], seconds: float | None) -> str:
    settings = "; ".join(f"{t}: mlp hidden {s['hidden_sizes']}, {s['epochs']} epochs, batch {s['batch_size']}, "
                         f"AdamW lr {s['lr']}" for t, s in SETTINGS.items())
    seeds = sorted({r["seed"] for r in rows})
    text = f"""# Label audit: detectors vs injected label flips

Generated by `benchmarks/label_audit.py` ({platform.machine()}, {platform.python_version()},
torch {torch.__version__}, 1 intra-op thread, 2 CPU cores shared with other jobs). Seeds: {seeds}.
Speed of `find_label_issues` itself vs cleanlab: [label_audit_speed.md](label_audit_speed.md).

Scaled down to fit the budget: {settings} (the zoo recipe trains 30 epochs of a 256x256 MLP).
Every pipeline uses the same model and training settings. Wall times on this shared machine
are noisy; `cpu s` (process CPU time) is the steadier cost measure. The K-fold CL mask was
asserted identical to `cleanlab.filter.find_label_issues` on the same `pred_probs` in every run.

## The aim: F1 >= K-fold confident learning at a third of its cost

{_verdict(rows)}

A detector meets the aim when its F1 is at least cl-kfold's and its time ratio is at most 0.33.

{FINDINGS}

## All results (mean over seeds; F1 ± standard deviation)

{_table(rows)}

Detectors: `cl-kfold` = 5-fold pred_probs + confident learning (prune_by_noise_rate);
`kfold-ensemble` = cl-kfold rank-combined with kNN on the out-of-sample penultimate features;
`aum` / `small-loss` / `forgetting` = one training run with per-example records (Pleiss et al.
2020 without threshold samples, cut at AUM < 0; mean-loss GMM; Toneva et al. 2019, never-learned
examples); `knn-inputs` = SimiFeat vote (k = 10, cosine) on the flattened inputs, no training;
`single-run-ensemble` = aum + knn-inputs by rank; `aum-threshold` = AUM with threshold samples
(2 runs, 99th percentile). ReCoV is not in the grid (it needs tens of repeated K-folds).
"""
    if seconds is not None:
        text += f"\nThis run took {seconds / 60:.1f} min.\n"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default=",".join(SETTINGS))
    parser.add_argument("--noises", default=",".join(NOISES))
    parser.add_argument("--rates", default=",".join(str(r) for r in RATES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=OUT_JSONL)
    parser.add_argument("--out", type=Path, default=OUT_MD)
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--findings", action="store_true",
                        help="Add the written verdict (it describes the committed results).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    if not args.table_only:
        done = {(r["task"], r["noise"], r["rate"], r["seed"]) for r in _load(args.results)}
        for seed in range(args.seeds):
            for task in args.tasks.split(","):
                for kind in args.noises.split(","):
                    for rate in (float(r) for r in args.rates.split(",")):
                        if (task, kind, rate, seed) in done:
                            continue
                        rows = run_one(task, kind, rate, seed)
                        with args.results.open("a") as fh:
                            for row in rows:
                                fh.write(json.dumps(row) + "\n")
                        best = max(rows, key=lambda r: r["f1"])
                        print(f"{task} {kind} {rate} seed {seed}: best {best['detector']} F1 {best['f1']:.3f}",
                              flush=True)
    rows = _load(args.results)
    text = write_markdown(rows, None if args.table_only else time.perf_counter() - start)
    text = text.replace("{FINDINGS}", FINDINGS if args.findings else "")
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
