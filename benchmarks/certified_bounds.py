"""Bound propagation: robustlab.certified.bounds vs auto_LiRPA (IBP, CROWN) on digits models.

Trains a small MLP (64-128-128-10, ReLU) and a small CNN (two convs + two linears, ReLU) on the
digits training split, then bounds the margins ``z_y - z_j`` of test digits under Linf and L2
balls with robustlab and with auto_LiRPA, and reports the largest relative difference of the
bounds, verified accuracy and wall time per call (median of ``--repeats``).

auto_LiRPA is not importable from PyPI here (0.3 pins an old torch and NumPy 1). It is read from
a source checkout (github:Verified-Intelligence/auto_LiRPA) given by ``--auto-lirpa PATH``; its
only missing dependency, graphviz (used for plotting only), is replaced by a stub module, so
nothing is installed into the environment.

    .venv/bin/python benchmarks/certified_bounds.py --auto-lirpa /tmp/alirpa           # ~3-5 min
    .venv/bin/python benchmarks/certified_bounds.py --auto-lirpa /tmp/alirpa --quick   # seconds

Writes docs/benchmarks/certified_bounds.md (``--quick`` writes nothing unless ``--out``).
L2 note: robustlab intersects the L2 ball with the [0, 1] box (both sound) and auto_LiRPA does
not, so robustlab's L2 bounds can be tighter; the table reports how many are and by how much.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
OUT_MD = ROOT / "docs" / "benchmarks" / "certified_bounds.md"
THREADS = 2


def make_models() -> dict[str, nn.Module]:
    return {
        "mlp": nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128),
                             nn.ReLU(), nn.Linear(128, 10)),
        "cnn": nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten(),
                             nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)),
    }


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def timed(fn, repeats: int, warmup: int = 0):
    out, times = None, []
    for _ in range(warmup):
        fn()
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--auto-lirpa", required=True, help="path of an auto_LiRPA source checkout")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    stub = Path(tempfile.mkdtemp()) / "graphviz.py"
    stub.write_text("class Digraph:  # plotting only; not needed for bounds\n    pass\n")
    sys.path[:0] = [args.auto_lirpa, str(stub.parent)]
    warnings.filterwarnings("ignore")
    import auto_LiRPA
    from auto_LiRPA import BoundedModule, BoundedTensor
    from auto_LiRPA.perturbations import PerturbationLpNorm

    from robustlab.certified import _graph, bounds, margin_spec
    from robustlab.data import load_dataset

    (xtr, ytr), (xte, yte) = (load_dataset("digits", split=s).tensors() for s in ("train", "test"))
    n = 32 if args.quick else 100
    epochs = 2 if args.quick else 20
    x, y = xte[:n], yte[:n]
    # "l2-interior": the same digits mapped to [0.25, 0.75], so the L2 balls stay inside the
    # [0, 1] box and the box can never tighten a bound: robustlab must then equal auto_LiRPA
    settings = [("linf", 0.01), ("linf", 0.03), ("l2", 0.1), ("l2", 0.3), ("l2-interior", 0.2)]
    rows, setup = [], []
    for name, model in make_models().items():
        torch.manual_seed(0)
        model = train(model, xtr, ytr, epochs, seed=0)
        C = margin_spec(y, 10)
        # one-off costs: auto_LiRPA builds a BoundedModule; robustlab traces on its first call
        # (kept for later calls on the same model), here the first IBP call with an empty cache
        _graph._TRACES.clear()
        _, t_first = timed(lambda: bounds(model, x, eps=0.01, method="ibp", C=C), 1)  # noqa: B023
        bm, t_build = timed(lambda: BoundedModule(model, torch.zeros_like(x[:1]), verbose=False), 1)  # noqa: B023
        setup.append((name, t_first, t_build))
        print(f"{name}: first robustlab call (trace + IBP) {t_first * 1e3:.1f} ms, "
              f"auto_LiRPA BoundedModule build {t_build * 1e3:.1f} ms", flush=True)
        x_all = x
        for setting, eps in settings:
            norm = "l2" if setting.startswith("l2") else "linf"
            x = 0.25 + 0.5 * x_all if setting == "l2-interior" else x_all
            if norm == "linf":
                ptb = PerturbationLpNorm(norm=float("inf"), eps=eps, x_L=(x - eps).clamp(0, 1),
                                         x_U=(x + eps).clamp(0, 1))
            else:
                ptb = PerturbationLpNorm(norm=2, eps=eps)
            bx = BoundedTensor(x, ptb)
            for ours, theirs in (("ibp", "IBP"), ("crown", "CROWN"), ("crown-ibp", "CROWN-IBP")):
                (rl, ru), t_rl = timed(lambda: bounds(model, x, eps=eps, norm=norm, method=ours, C=C),  # noqa: B023
                                       args.repeats, warmup=1)
                with torch.no_grad():
                    (al, au), t_al = timed(lambda: bm.compute_bounds(x=(bx,), C=C, method=theirs),  # noqa: B023
                                           args.repeats, warmup=1)
                scale = torch.maximum(al.abs(), au.abs()).clamp(min=1e-6)
                rel_l = ((rl - al).abs() / scale).max().item()
                rel_u = ((ru - au).abs() / scale).max().item()
                tighter = int(((rl > al + 1e-6 * scale) | (ru < au - 1e-6 * scale)).sum())
                looser = int(((rl < al - 1e-5 * scale) | (ru > au + 1e-5 * scale)).sum())
                rows.append({"model": name, "norm": setting, "eps": eps, "method": ours,
                                 "rel": max(rel_l, rel_u), "tighter": tighter, "looser": looser,
                                 "total": rl.numel(),
                                 "ver_rl": float((rl > 0).all(1).float().mean()),
                                 "ver_al": float((al > 0).all(1).float().mean()),
                                 "t_rl": t_rl, "t_al": t_al})
                r = rows[-1]
                print(f"{name} {setting} eps={eps} {ours:9s} max rel diff {r['rel']:.2e} "
                      f"tighter {tighter}/{r['total']} looser {looser} verified {r['ver_rl']:.3f} vs "
                      f"{r['ver_al']:.3f}  time {t_rl * 1e3:.1f} ms vs {t_al * 1e3:.1f} ms", flush=True)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out = args.out if args.out is not None else (None if args.quick else OUT_MD)
    if out is None:
        return
    lines = [
        "# Bound propagation: robustlab.certified.bounds vs auto_LiRPA",
        "",
        f"`{' '.join(['.venv/bin/python', 'benchmarks/certified_bounds.py'] + sys.argv[1:])}`",
        "",
        (f"auto_LiRPA {auto_LiRPA.__version__} (source checkout of github:Verified-Intelligence/"
        f"auto_LiRPA, graphviz stubbed), torch {torch.__version__}, {platform.machine()}, "
        f"{args.threads} torch threads on a shared machine ({os.cpu_count()} cores, 1-min load average "
        f"{load_start:.1f} at the start and {load_end:.1f} at the end of the run: timings are noisy). "
        f"{n} test digits, "
        f"models trained {epochs} epochs; bounds on the 9 margins z_y - z_j (margin_spec); "
        f"median of {args.repeats} calls after one warm-up call, the two libraries' calls "
        f"interleaved per row."),
        "",
        ("Max rel. diff = max |ours - theirs| / max(|lower|, |upper|) of auto_LiRPA over all "
        "bounds. Tighter/looser: number of bounds (of lower+upper counted once per margin) where "
        "robustlab is tighter (> 1e-6 rel.) or looser (> 1e-5 rel.)."),
        "",
        ("| model | norm | eps | method | max rel. diff | tighter | looser | verified (ours / auto_LiRPA) "
        "| ms (ours / auto_LiRPA) |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['norm']} | {r['eps']} | {r['method']} | {r['rel']:.1e} | "
                     f"{r['tighter']}/{r['total']} | {r['looser']} | {r['ver_rl']:.3f} / {r['ver_al']:.3f} | "
                     f"{r['t_rl'] * 1e3:.1f} / {r['t_al'] * 1e3:.1f} |")
    l2_note = (
        'L2: robustlab also intersects the ball with the [0, 1] box (sound: every coordinate of '
        'an L2 perturbation of norm <= eps moves by <= eps); auto_LiRPA bounds the whole ball. '
        "And for the first Conv2d under L2, IBP's deviation in robustlab is eps * "
        "sqrt(conv(W^2, s^2)), the exact L2 norm of each output's row (zero padding included), "
        'where auto_LiRPA uses eps * ||W_c||_2 over the whole kernel for every output '
        '(auto_LiRPA operators/convolution.py interval_propagate), which is looser at the image '
        "border. So robustlab's L2 bounds on the CNN are tighter, also on 'l2-interior' (digits "
        'mapped to [0.25, 0.75], balls inside the box): there the remaining difference '
        "should come from the convolution's border rows (our reading of the two codes, "
        'not isolated by a separate run); on the MLP (no convolution) the two agree to '
        "rounding. A tighter intermediate bound can in principle change CROWN's adaptive slopes "
        "and loosen a final bound, so 'looser' is counted too (a few of 900 margins, CROWN on "
        'the CNN under L2).'
    )
    times_note = (
        "Times (warm): the median of the timed calls, after a first call. auto_LiRPA's "
        "BoundedModule is built once, outside the timed calls; robustlab traces the model with "
        "torch.fx on its first call and reuses the trace while the model's structure, modes "
        "and attributes are unchanged (weights are read on every call). One-off costs, measured "
        "once per model:"
    )
    setup_lines = [f"- {name}: robustlab's first call (trace + IBP) {tf * 1e3:.1f} ms; "
                   f"auto_LiRPA's BoundedModule build {tb * 1e3:.1f} ms" for name, tf, tb in setup]
    how_note = (
        "CROWN's intermediate bounds: both libraries recompute only the neurons IBP leaves "
        "unstable; robustlab per example (auto_LiRPA takes the union over the batch), propagating "
        "a convolutional layer's rows as patches over their receptive fields (as auto_LiRPA's "
        "conv_mode='patches'), specification-first, in 1 MiB chunks. Max rel. diff shows the "
        "bounds agree all the same (a few 1e-6 on Linf and MLP L2)."
    )
    slower = [r for r in rows if r["t_rl"] > r["t_al"]]
    summary = (f"robustlab is faster in {len(rows) - len(slower)} of {len(rows)} rows (warm calls); "
               + ("slower in: " + "; ".join(f"{r['model']} {r['norm']} {r['eps']} {r['method']} "
                                            f"({r['t_rl'] / r['t_al']:.2f}x)" for r in slower)
                  if slower else "slower in none") + ".")
    lines += ["", summary, "", l2_note, "", times_note, "", *setup_lines, "", how_note, ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
