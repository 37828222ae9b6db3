"""Confidence and repair on digits: calibration, OOD / adversarial detection, weight signatures,
weight interpolation.

Models: the small CNN (robustlab.models "small-cnn", the zoo's digits recipe: AdamW, lr 3e-3,
weight decay 5e-4, cosine, batch 64, but 10 epochs instead of 15) trained on 80% of the digits training split with the
objectives ``ce``, ``label-smoothing`` (epsilon 0.1), ``maxsup`` (robustlab.calibration.training)
and ``pgd-at`` (linf eps 0.1, 5 PGD steps); the other 20% (stratified, seeded) is the held-out
split on which scalers, detector ensembles and the Mahalanobis pre-processing are fitted. Every
number is measured on the 360-example digits test split.

1. Calibration: accuracy, ECE (15 equal-width bins), NLL and Brier before and after temperature
   and vector scaling (robustlab.calibration, fitted on the held-out split).
2. Detection (robustlab.detection): MSP, energy, kNN (k = 50, bank = training split) and
   Mahalanobis (class means / covariance on the training split; layers and eps "auto": ensemble
   weights and pre-processing chosen on the held-out split against its FGSM examples, Lee et al.
   2018). Out sets: the detection probe's generated OOD sets (uniform noise, pixel-permuted test
   digits, gaussian_noise at severity 5) and PGD-20 (linf 0.1) inputs: as in Lee et al., the in
   set is the correctly classified test digits PGD breaks and the out set their adversarial
   versions. AUROC and FPR at 95% TPR (in-distribution = positives).
3. Robust weight signatures (robustlab.repair.signatures): the ce model fine-tuned on
   corrupted training digits; signature = tuned - base; its size (float, int8, int4) against a
   full copy of the weights, and the corrupted / clean test accuracy of base + scale * signature.
4. Interpolation (robustlab.repair.interpolate): (1 - alpha) * ce + alpha * pgd-at, clean and
   robust (suite "fast": APGD-CE + APGD-T, linf 0.1) accuracy over alpha (5 values, 60 test digits).

    .venv/bin/python benchmarks/confidence_repair.py            # full: ~30 min on a loaded 2-core box
    .venv/bin/python benchmarks/confidence_repair.py --quick    # 2-3 epochs, fewer examples

Writes docs/benchmarks/confidence_repair.md (``--quick`` prints it instead unless ``--out``).
A section whose library has not landed (ImportError / unknown objective) is written as missing.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT_MD = ROOT / "docs" / "benchmarks" / "confidence_repair.md"
THREADS = 2
EPS = 0.1
#: 10 epochs, not the zoo recipe's 15: the full run has to fit a 2-core machine shared by 8 jobs.
EPOCHS = 10
HOLDOUT = 0.2
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "ce": ("ce", {}),
    "label-smoothing": ("label-smoothing", {"label_smoothing": 0.1}),
    "maxsup": ("maxsup", {}),
    "pgd-at": ("pgd-at", {"eps": EPS, "num_steps": 5}),
}
PGD_STEPS = 20
KNN_K = 50
CORRUPTION, CORRUPTION_SEVERITY = "gaussian_noise", 5
FINETUNE_EPOCHS, FINETUNE_LR = 5, 1e-3
SCALES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


# --------------------------------------------------------------------------- data and models
def splits(seed: int):
    """(train, held-out, test) Datasets: a stratified, seeded 80/20 split of the training split."""
    from robustlab import zoo

    train, test = zoo.load_splits("digits")
    g = torch.Generator().manual_seed(seed)
    labels = train.labels
    fit, held = [], []
    for c in range(train.num_classes):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        k = round(HOLDOUT * idx.numel())
        held.append(idx[:k])
        fit.append(idx[k:])
    fit_idx, held_idx = torch.cat(fit).sort().values, torch.cat(held).sort().values
    return train.subset(fit_idx, name="digits-train80"), train.subset(held_idx, name="digits-holdout20"), test


def train_model(method: str, options: dict[str, Any], train, *, epochs: int, seed: int,
                init: torch.nn.Module | None = None, lr: float = 3e-3):
    from robustlab import zoo
    from robustlab.training import TrainConfig, Trainer, build_objective

    model = copy.deepcopy(init) if init is not None else zoo.build_for_data("small-cnn", train, seed=seed)[0]
    config = TrainConfig(epochs=epochs, batch_size=64, optimizer="adamw", lr=lr, weight_decay=5e-4,
                         schedule="cosine", seed=seed)
    t0 = time.perf_counter()
    Trainer(model, build_objective(method, **options), config).fit(train)
    model.eval()
    return model, time.perf_counter() - t0


@torch.no_grad()
def logits_of(model, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + 512]) for i in range(0, len(x), 512)])


def accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits_of(model, x).argmax(1) == y).float().mean())


# --------------------------------------------------------------------------- 1. calibration
def calibration(model, held, test) -> dict[str, Any]:
    from robustlab.calibration import (
        TemperatureScaling,
        VectorScaling,
        brier_score,
        expected_calibration_error,
        negative_log_likelihood,
    )

    (xh, yh), (xt, yt) = held.tensors(), test.tensors()
    zh, zt = logits_of(model, xh).double(), logits_of(model, xt).double()

    def metrics(p: torch.Tensor) -> dict[str, float]:
        return {"ece": expected_calibration_error(p, yt), "nll": negative_log_likelihood(p, yt),
                "brier": brier_score(p, yt)}

    ts = TemperatureScaling().fit(zh, yh)
    vs = VectorScaling().fit(zh, yh)
    return {"accuracy": float((zt.argmax(1) == yt).double().mean()), "before": metrics(zt.softmax(1)),
            "temperature": metrics(ts.predict_proba(zt)), "vector": metrics(vs.predict_proba(zt)),
            "T": ts.temperature_,
            "vector_accuracy": float((vs.predict_proba(zt).argmax(1) == yt).double().mean())}


# --------------------------------------------------------------------------- 2. detection
def detection(model, train, held, test, *, seed: int, pgd_examples: int) -> dict[str, Any]:
    from robustlab.adversarial import fgsm, pgd
    from robustlab.detection import (
        KNN,
        Energy,
        Mahalanobis,
        MaxSoftmax,
        detection_metrics,
    )
    from robustlab.detection.probe import make_ood_sets

    (xtr, ytr), (xh, yh), (xt, yt) = train.tensors(), held.tensors(), test.tensors()
    ood, _ = make_ood_sets(xtr, xt, is_image=True, seed=seed, corruption=CORRUPTION)
    xa, ya = xt[:pgd_examples], yt[:pgd_examples]
    res = pgd(model, xa, ya, eps=EPS, norm="linf", num_steps=PGD_STEPS, generator=torch.Generator().manual_seed(seed))
    correct = logits_of(model, xa).argmax(1) == ya
    keep = correct & res.success
    adv_in, adv_out = xa[keep], res.adv_inputs[keep].detach()
    t0 = time.perf_counter()
    val_out = fgsm(model, xh, yh, eps=EPS).adv_inputs.detach()
    dets = {"msp": MaxSoftmax().fit(), "energy": Energy().fit(), "knn": KNN(k=KNN_K).fit(model, xtr),
            "mahalanobis": Mahalanobis(layers="auto", eps="auto").fit(model, xtr, ytr, val_in=xh, val_out=val_out)}
    fit_s = time.perf_counter() - t0
    out: dict[str, Any] = {"pgd_pairs": int(keep.sum()), "pgd_correct": int(correct.sum()),
                           "maha_layers": dets["mahalanobis"].layers_, "maha_eps": dets["mahalanobis"].eps_,
                           "fit_s": fit_s, "detectors": {}}
    for name, det in dets.items():
        s_in = det.score(model, xt)
        row = {o: detection_metrics(s_in, det.score(model, xo)) for o, xo in ood.items()}
        if int(keep.sum()) >= 2:
            row["pgd"] = detection_metrics(det.score(model, adv_in), det.score(model, adv_out))
        out["detectors"][name] = row
    return out


# --------------------------------------------------------------------------- 3. signatures
def signatures(base, train, test, *, seed: int, epochs: int, scales) -> dict[str, Any]:
    from robustlab.corruptions import corrupt
    from robustlab.data import Dataset
    from robustlab.repair.signatures import (
        extract_signature,
        layer_changes,
        quantize_signature,
        signature_scale_curve,
    )

    (xtr, ytr), (xt, yt) = train.tensors(), test.tensors()
    g = torch.Generator().manual_seed(seed + 11)
    xtr_c = corrupt(xtr, CORRUPTION, CORRUPTION_SEVERITY, generator=g, preset="mnist")
    xt_c = corrupt(xt, CORRUPTION, CORRUPTION_SEVERITY, generator=torch.Generator().manual_seed(seed + 12),
                   preset="mnist")
    # The signature holds parameters only (BatchNorm running statistics are buffers): fine-tune with
    # the running statistics frozen so that base + signature can be the fine-tuned model.
    tuned, tune_s = finetune_frozen_bn(base, xtr_c, ytr, epochs=epochs, seed=seed)
    sig = extract_signature(base, tuned, name=CORRUPTION)
    num_layers = len(layer_changes(base, tuned))
    variants = {"float": sig, "int8": quantize_signature(sig, 8), "int4": quantize_signature(sig, 4),
                "float, every layer": extract_signature(base, tuned, num_layers=num_layers, name=CORRUPTION)}
    out = {"full_bytes": sig.full_copy_bytes, "tune_s": tune_s, "num_layers": num_layers,
           "base": {"clean": accuracy(base, xt, yt), "corrupted": accuracy(base, xt_c, yt)},
           "tuned": {"clean": accuracy(tuned, xt, yt), "corrupted": accuracy(tuned, xt_c, yt)},
           "variants": {}}
    for name, s in variants.items():
        curve = signature_scale_curve(base, s, xt, yt, scales=list(scales), corrupted_inputs=xt_c)
        out["variants"][name] = {"bytes": int(s.num_bytes), "layers": list(s.layers),
                                 "curve": list(zip(curve.scales, curve.clean_accuracy, curve.corrupted_accuracy))}
    # The same fine-tune with the Trainer (BatchNorm in training mode: its running statistics move
    # to the corrupted data's) -- what the signature cannot carry.
    trainer_tuned, _ = train_model("ce", {}, Dataset(xtr_c, ytr, name="digits-corrupted"), epochs=epochs,
                                   seed=seed, init=base, lr=FINETUNE_LR)
    every = extract_signature(base, trainer_tuned, num_layers=num_layers, name=CORRUPTION)
    curve = signature_scale_curve(base, every, xt, yt, scales=[1.0], corrupted_inputs=xt_c)
    out["trainer"] = {"clean": accuracy(trainer_tuned, xt, yt), "corrupted": accuracy(trainer_tuned, xt_c, yt),
                      "sig_clean": curve.clean_accuracy[0], "sig_corrupted": curve.corrupted_accuracy[0]}
    return out


def finetune_frozen_bn(base: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int,
                       seed: int) -> tuple[torch.nn.Module, float]:
    """Cross-entropy fine-tune (AdamW, lr FINETUNE_LR, cosine, batch 64) with BatchNorm in eval mode."""
    model = copy.deepcopy(base)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=FINETUNE_LR, weight_decay=5e-4)
    steps = epochs * ((len(y) + 63) // 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    t0 = time.perf_counter()
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()  # running statistics stay the base model's
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    return model, time.perf_counter() - t0


# --------------------------------------------------------------------------- 4. interpolation
def interpolation(ce_model, at_model, test, *, seed: int, examples: int, alphas) -> dict[str, Any]:
    from robustlab.repair.interpolate import interpolation_curve

    x, y = test.tensors()
    t0 = time.perf_counter()
    curve = interpolation_curve(ce_model, at_model, x[:examples], y[:examples], alphas=list(alphas), eps=EPS,
                                norm="linf", suite="fast", generator=torch.Generator().manual_seed(seed))
    return {"alphas": [float(a) for a in curve.alphas], "clean": [float(a) for a in curve.clean_accuracy],
            "robust": [float(a) for a in curve.robust_accuracy], "examples": examples,
            "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------- markdown
def _missing(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def to_markdown(res: dict[str, Any], args: argparse.Namespace) -> str:
    lines = ["# Confidence and repair on digits", ""]
    lines += [
        (f"Small CNN (`small-cnn`, the zoo's digits recipe but {args.epochs} epochs) per training objective, trained on "
         f"a stratified 80% of the digits training split ({res['n_train']} examples); the other 20% "
         f"({res['n_held']}) is the held-out split for scalers and detector ensembles; every number is on the "
         f"digits test split ({res['n_test']} examples). Seed {args.seed}. Produced by "
         f"`benchmarks/confidence_repair.py{' --quick' if args.quick else ''}`."),
        "",
        "## Models", "",
        "| objective | options | test accuracy | train s |", "|---|---|---|---|",
    ]
    for name, m in res["models"].items():
        if "error" in m:
            lines.append(f"| {name} | {METHODS[name][1]} | missing: {m['error']} | |")
        else:
            lines.append(f"| {name} | {METHODS[name][1]} | {m['accuracy']:.4f} | {m['train_s']:.1f} |")
    lines += ["", "## 1. Calibration before and after post-hoc scaling", "",
              ("ECE: 15 equal-width bins, top-label (Guo et al. 2017). Scalers fitted by L-BFGS on the held-out "
              "split's logits (robustlab.calibration.TemperatureScaling / VectorScaling). Vector scaling may change "
              "predictions (its accuracy is in the last column); temperature scaling never does."), "",
              ("| objective | accuracy | ECE | NLL | Brier | T | ECE (T) | NLL (T) | Brier (T) | ECE (vector) | "
              "NLL (vector) | Brier (vector) | accuracy (vector) |"),
              "|---|" + "---|" * 12]
    for name, c in res["calibration"].items():
        if "error" in c:
            lines.append(f"| {name} | missing: {c['error']} |" + " |" * 11)
            continue
        b, t, v = c["before"], c["temperature"], c["vector"]
        lines.append(f"| {name} | {c['accuracy']:.4f} | {b['ece']:.4f} | {b['nll']:.4f} | {b['brier']:.4f} | "
                     f"{c['T']:.3f} | {t['ece']:.4f} | {t['nll']:.4f} | {t['brier']:.4f} | {v['ece']:.4f} | "
                     f"{v['nll']:.4f} | {v['brier']:.4f} | {c['vector_accuracy']:.4f} |")
    lines += ["", "## 2. Detection: OOD sets and PGD inputs", "",
              (f"In-distribution: the {res['n_test']} test digits (positives). OOD sets (robustlab.detection.probe."
               f"make_ood_sets): `uniform_noise`, `permuted_pixels` (each test digit's pixels shuffled: same "
               f"intensities, no strokes), `corrupted` ({CORRUPTION}, severity {CORRUPTION_SEVERITY}). PGD: "
               f"PGD-{PGD_STEPS} linf eps={EPS} (one random start) on the first {args.pgd_examples} test digits; "
               "in = the correctly classified ones it breaks, out = their adversarial versions (Lee et al. 2018, "
               "Sec. 3.2), so the PGD columns rest on `pairs` examples each. kNN: k = 50 on the training split's "
               "normalised penultimate features. Mahalanobis: class means and tied covariance on the training "
               "split, layers and eps chosen automatically (`layers=\"auto\"`, `eps=\"auto\"`), ensemble weights "
               "and eps fitted on the held-out split against its FGSM examples (eps 0.1) — no OOD set is seen."),
              "",
              ("| objective | detector | AUROC uniform | AUROC permuted | AUROC corrupted | mean OOD AUROC | "
              "FPR95 permuted | FPR95 corrupted | AUROC PGD | FPR95 PGD | pairs |"),
              "|---|---|" + "---|" * 9]
    notes = []
    for name, d in res["detection"].items():
        if "error" in d:
            lines.append(f"| {name} | missing: {d['error']} |" + " |" * 9)
            continue
        notes.append(f"{name}: Mahalanobis layers {list(d['maha_layers'])}, eps {d['maha_eps']:g}; "
                     f"PGD broke {d['pgd_pairs']} of {d['pgd_correct']} correctly classified digits")
        for det, row in d["detectors"].items():
            ood = [row[o].auroc for o in ("uniform_noise", "permuted_pixels", "corrupted")]
            pgd = row.get("pgd")
            lines.append(
                f"| {name} | {det} | {ood[0]:.4f} | {ood[1]:.4f} | {ood[2]:.4f} | {np.mean(ood):.4f} | "
                f"{row['permuted_pixels'].fpr_at_95_tpr:.4f} | {row['corrupted'].fpr_at_95_tpr:.4f} | "
                + (f"{pgd.auroc:.4f} | {pgd.fpr_at_95_tpr:.4f} | {pgd.num_in} |" if pgd else "— | — | "
                   f"{d['pgd_pairs']} |"))
    lines += [""] + [f"- {n}." for n in notes]
    lines += ["", "## 3. Robust weight signature of a corruption", ""]
    s = res["signature"]
    if "error" in s:
        lines += [f"Missing: {s['error']}", ""]
    else:
        lines += [
            (f"The ce model fine-tuned for {args.finetune_epochs} epochs (cross-entropy, AdamW, lr {FINETUNE_LR}, "
             "cosine, batch 64, BatchNorm running statistics frozen at the base model's) on the "
             f"training split corrupted with {CORRUPTION} at severity {CORRUPTION_SEVERITY} (preset \"mnist\"); "
             "signature = tuned - base (`extract_signature(base, tuned)`: layers=\"auto\", the half of the "
             f"{s['num_layers']} layers that changed most, relative to their norm: "
             f"{s['variants']['float']['layers']}), quantised with `quantize_signature(sig, 8 | 4)`; the last "
             "variant keeps every layer. Sizes: `Signature.num_bytes` (codes and steps) against "
             "`full_copy_bytes` (every floating-point parameter and buffer). Corrupted accuracy: the test split "
             "with the same corruption (fresh noise). Patched model: base + s * signature "
             "(`signature_scale_curve`, i.e. `apply_signature(base, sig, scale=s)`). With the running "
             "statistics frozen, the every-layer signature at s = 1 is the fine-tuned model (its row "
             "reproduces the fine-tuned accuracies: a check of apply_signature)."),
            "",
            (f"Base: clean {s['base']['clean']:.4f}, corrupted {s['base']['corrupted']:.4f}. Fine-tuned: clean "
            f"{s['tuned']['clean']:.4f}, corrupted {s['tuned']['corrupted']:.4f} ({s['tune_s']:.1f} s)."),
            "",
            ("| signature | bytes | size / full weights | clean acc (s=1) | corrupted acc (s=1) | corrupted gain | "
            "clean cost |"),
            "|---|---|---|---|---|---|---|",
            (f"| full weight copy | {s['full_bytes']} | 1.000 | {s['tuned']['clean']:.4f} | "
            f"{s['tuned']['corrupted']:.4f} | {s['tuned']['corrupted'] - s['base']['corrupted']:+.4f} | "
            f"{s['base']['clean'] - s['tuned']['clean']:+.4f} |"),
        ]
        for name, v in s["variants"].items():
            one = next(c for c in v["curve"] if c[0] == 1.0)
            lines.append(f"| {name} | {v['bytes']} | {v['bytes'] / s['full_bytes']:.3f} | {one[1]:.4f} | {one[2]:.4f} | "
                         f"{one[2] - s['base']['corrupted']:+.4f} | {s['base']['clean'] - one[1]:+.4f} |")
        t = s["trainer"]
        lines += ["", (f"Why frozen statistics: the same fine-tune with the Trainer (BatchNorm in training mode, so its "
                       f"running statistics move to the noisy data's) reaches clean {t['clean']:.4f} / corrupted "
                       f"{t['corrupted']:.4f}, but its every-layer signature added to the base model at s = 1 gives "
                       f"clean {t['sig_clean']:.4f} / corrupted {t['sig_corrupted']:.4f} (base: "
                       f"{s['base']['corrupted']:.4f} corrupted): with BatchNorm, the robustness lives largely in the "
                       "running statistics, which a signature (parameters only, as in the reference) does not carry.")]
        lines += ["", "Accuracy over the scale s (clean / corrupted):", "",
                  "| s | " + " | ".join(s["variants"]) + " |", "|---|" + "---|" * len(s["variants"])]
        for i, scale in enumerate(args.scales):
            cells = [f"{v['curve'][i][1]:.4f} / {v['curve'][i][2]:.4f}" for v in s["variants"].values()]
            lines.append(f"| {scale:g} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## 4. Interpolation between the ce and pgd-at models", ""]
    it = res["interpolation"]
    if "error" in it:
        lines += [f"Missing: {it['error']}", ""]
    else:
        lines += [(f"`interpolate_weights(ce, pgd_at, alpha)` = (1 - alpha) * ce + alpha * pgd-at; clean and robust "
                   f"accuracy (suite \"fast\": APGD-CE + APGD-T, linf eps={EPS}) on the first {it['examples']} test "
                   f"digits (`interpolation_curve`, {it['seconds']:.1f} s)."), "",
                  "| alpha | clean accuracy | robust accuracy |", "|---|---|---|"]
        lines += [f"| {a:g} | {c:.4f} | {r:.4f} |" for a, c, r in zip(it["alphas"], it["clean"], it["robust"])]
        lines.append("")
    lines += ["## Run", "",
              (f"Total wall time {res['total_s']:.0f} s; {torch.get_num_threads()} torch threads on "
               f"{platform.processor() or platform.machine()}, torch {torch.__version__}; the machine was shared "
               f"with other jobs (load average at the start {res['load'][0]:.1f}, "
               f"{os.cpu_count()} cores), so times are noisy."), ""]
    return "\n".join(lines)


def _section(fn, *a, **kw) -> dict[str, Any]:
    try:
        return fn(*a, **kw)
    except ImportError as exc:  # a library that has not landed yet
        return {"error": _missing(exc)}
    except Exception as exc:  # noqa: BLE001  (a section that fails is reported, the rest still runs)
        traceback.print_exc()
        return {"error": _missing(exc)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", THREADS)))
    args.epochs = 3 if args.quick else EPOCHS
    args.finetune_epochs = 2 if args.quick else FINETUNE_EPOCHS
    args.pgd_examples = 100 if args.quick else 360
    args.interp_examples = 30 if args.quick else 60  # APGD-T is the cost of the whole benchmark
    args.scales = (0.0, 0.5, 1.0) if args.quick else SCALES
    alphas = (0.0, 0.5, 1.0) if args.quick else ALPHAS
    started = time.perf_counter()
    load = os.getloadavg()
    train, held, test = splits(args.seed)
    res: dict[str, Any] = {"n_train": len(train), "n_held": len(held), "n_test": len(test), "load": load,
                           "models": {}, "calibration": {}, "detection": {}}
    models = {}
    from robustlab.errors import UnknownNameError

    for name, (method, options) in METHODS.items():
        try:
            if method == "maxsup":
                import robustlab.calibration.training  # noqa: F401  (registers "maxsup")
            model, secs = train_model(method, options, train, epochs=args.epochs, seed=args.seed)
        except (ImportError, UnknownNameError) as exc:
            res["models"][name] = {"error": _missing(exc)}
            res["calibration"][name] = res["detection"][name] = {"error": "model missing"}
            print(f"{name}: missing ({_missing(exc)})", flush=True)
            continue
        models[name] = model
        x, y = test.tensors()
        res["models"][name] = {"accuracy": accuracy(model, x, y), "train_s": secs}
        res["calibration"][name] = _section(calibration, model, held, test)
        res["detection"][name] = _section(detection, model, train, held, test, seed=args.seed,
                                          pgd_examples=args.pgd_examples)
        c = res["calibration"][name]
        print(f"{name}: acc {res['models'][name]['accuracy']:.4f} ({secs:.1f} s); "
              + (f"ECE {c['before']['ece']:.4f} -> T {c['temperature']['ece']:.4f} / vector {c['vector']['ece']:.4f}"
                 if "error" not in c else c["error"]), flush=True)
        d = res["detection"][name]
        if "error" not in d:
            for det, row in d["detectors"].items():
                print(f"  {det:12s} OOD AUROC " + " ".join(f"{o}={m.auroc:.3f}" for o, m in row.items()), flush=True)
    if "ce" in models:
        res["signature"] = _section(signatures, models["ce"], train, test, seed=args.seed,
                                    epochs=args.finetune_epochs, scales=args.scales)
    else:
        res["signature"] = {"error": "the ce model is missing"}
    print("signature:", {k: v for k, v in res["signature"].items() if k != "variants"}, flush=True)
    if "ce" in models and "pgd-at" in models:
        res["interpolation"] = _section(interpolation, models["ce"], models["pgd-at"], test, seed=args.seed,
                                        examples=args.interp_examples, alphas=alphas)
    else:
        res["interpolation"] = {"error": "the ce or pgd-at model is missing"}
    print("interpolation:", res["interpolation"], flush=True)
    res["total_s"] = time.perf_counter() - started
    md = to_markdown(res, args)
    out = args.out or (None if args.quick else OUT_MD)
    if out is not None:
        from robustlab._io import atomic_write_text

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, md)
        print(f"wrote {out}")
    else:
        print(md)


if __name__ == "__main__":
    main()
