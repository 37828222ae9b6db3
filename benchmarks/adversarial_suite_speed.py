"""Speed of robustlab's AutoAttack-equivalent evaluation against torchattacks and fra31/AutoAttack.

A naturally trained small CNN on the built-in digits (8x8, trained here in a few seconds, as
tests/adversarial/conftest.py does) is evaluated on the first ``--n`` test digits with the
"standard" suite (APGD-CE, APGD-T with 9 targets, FAB-T with 9 targets, Square with 5000 queries;
Linf, ``--eps``) by:

* robustlab: ``robustlab.adversarial.evaluate(..., suite="standard")`` (100 iterations, as fra31);
* torchattacks-shipped: ``torchattacks.AutoAttack`` as shipped (its APGD/APGD-T/FAB run their
  defaults, 10 iterations, not AutoAttack's 100);
* torchattacks-fra31: ``torchattacks.MultiAttack`` of APGD(steps=100, loss="ce"),
  APGDT(steps=100, n_classes=10), FAB(steps=100, multi_targeted=True, n_classes=10),
  Square(n_queries=5000) -- torchattacks configured to fra31's settings;
* fra31: ``autoattack.AutoAttack(version="standard")`` (only if the package is installed).

Each is run ``--repeats`` times, interleaved; the table reports the best wall time and best CPU
time (``time.thread_time``, one thread), the robust accuracy, and per-attack CPU times (from the
best run). Run with ``OMP_NUM_THREADS=1``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/adversarial_suite_speed.py            # 256 digits, 3 repeats
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/adversarial_suite_speed.py --quick    # smoke run

Writes ``docs/benchmarks/adversarial_suite_speed.md`` (not with ``--quick``, unless ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "adversarial_suite_speed.md"
NAMES = ("apgd-ce", "apgd-t", "fab-t", "square")


# --------------------------------------------------------------------------- model and data
def make_cnn(num_classes: int = 10) -> nn.Module:
    """The small CNN of tests/adversarial/adv_testkit.py."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, num_classes),
    )


def train_cnn(x: torch.Tensor, y: torch.Tensor, *, epochs: int = 10, seed: int = 1) -> nn.Module:
    """He-initialised, Adam 3e-3, batch 64 (as tests/adversarial/conftest.py's ``digits_cnn``)."""
    model = make_cnn()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5)
            else:
                p.zero_()
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


# --------------------------------------------------------------------------- timing
class Clock:
    """Accumulates wall and CPU (thread) seconds per attack name."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}

    @contextlib.contextmanager
    def time(self, name: str) -> Iterator[None]:
        c0, w0 = time.thread_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu[name] = self.cpu.get(name, 0.0) + time.thread_time() - c0
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w0

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.time(name):
                return fn(*args, **kwargs)
        return timed


def robust_accuracy(model: nn.Module, adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(adv).argmax(dim=1) == y).float().mean())


# --------------------------------------------------------------------------- the contenders
def run_robustlab(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
                  clock: Clock) -> float:
    from robustlab.adversarial import evaluate
    from robustlab.adversarial.evaluate import suite_attacks

    attacks = [(name, clock.wrap(name, fn)) for name, fn in suite_attacks("standard", eps=eps, norm="linf",
                                                                           num_classes=10)]
    # one chunk of all examples in this process, as fra31 runs here (bs = n): the per-attack CPU
    # comparison on one thread (evaluate's worker processes and split target ranks are measured in
    # benchmarks/adversarial.py, on 2 cores)
    res = evaluate(model, x, y, eps=eps, norm="linf", suite="standard", attacks=attacks,
                   generator=torch.Generator().manual_seed(seed), progress=False,
                   batch_size=x.shape[0], workers=1)
    return res.robust_accuracy


def _torchattacks_multi(model: nn.Module, eps: float, seed: int, clock: Clock, *, fra31: bool) -> Any:
    import torchattacks as ta

    if fra31:
        atks = [ta.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=seed),
                ta.APGDT(model, norm="Linf", eps=eps, steps=100, n_restarts=1, n_classes=10, seed=seed),
                ta.FAB(model, norm="Linf", eps=eps, steps=100, n_restarts=1, multi_targeted=True,
                       n_classes=10, seed=seed),
                ta.Square(model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, seed=seed)]
        multi = ta.MultiAttack(atks)
    else:
        multi = ta.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=seed)
        atks = multi._autoattack.attacks
    for name, atk in zip(NAMES, atks):
        atk.forward = clock.wrap(name, atk.forward)
    return multi


def run_torchattacks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
                     clock: Clock, *, fra31: bool) -> float:
    multi = _torchattacks_multi(model, eps, seed, clock, fra31=fra31)
    return robust_accuracy(model, multi(x, y), y)


def run_fra31(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
              clock: Clock) -> float:
    from autoattack import AutoAttack

    adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", device="cpu", verbose=False,
                           seed=seed)
    # fra31 calls apgd.perturb (APGD-CE), apgd_targeted.perturb, fab.perturb (FAB-T), square.perturb
    adversary.apgd.perturb = clock.wrap("apgd-ce", adversary.apgd.perturb)
    adversary.apgd_targeted.perturb = clock.wrap("apgd-t", adversary.apgd_targeted.perturb)
    adversary.fab.perturb = clock.wrap("fab-t", adversary.fab.perturb)
    adversary.square.perturb = clock.wrap("square", adversary.square.perturb)
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        adv = adversary.run_standard_evaluation(x, y, bs=x.shape[0])
    return robust_accuracy(model, adv, y)


def contenders() -> dict[str, Callable[..., float]]:
    out: dict[str, Callable[..., float]] = {"robustlab": run_robustlab}
    try:
        import torchattacks  # noqa: F401
        out["torchattacks-shipped"] = lambda *a: run_torchattacks(*a, fra31=False)
        out["torchattacks-fra31"] = lambda *a: run_torchattacks(*a, fra31=True)
    except ImportError:
        print("torchattacks not installed: skipped", file=sys.stderr)
    try:
        import autoattack  # noqa: F401
        out["fra31"] = run_fra31
    except ImportError:
        print("autoattack (fra31) not installed: skipped", file=sys.stderr)
    return out


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=256, help="test digits evaluated")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of each contender")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=None, help="comma-separated contenders to run")
    ap.add_argument("--quick", action="store_true", help="smoke run: 32 digits, 1 repeat, no file")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.repeats = 32, 1
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    torch.set_num_threads(1)

    from robustlab.data import load_dataset

    (xtr, ytr), (xte, yte) = (load_dataset("digits", split=s).tensors() for s in ("train", "test"))
    c0 = time.thread_time()
    model = train_cnn(xtr, ytr)
    train_s = time.thread_time() - c0
    x, y = xte[:args.n].clone(), yte[:args.n].clone()
    with torch.no_grad():
        clean = float((model(x).argmax(dim=1) == y).float().mean())

    runs = contenders()
    if args.only:
        keep = set(args.only.split(","))
        runs = {k: v for k, v in runs.items() if k in keep}
    best: dict[str, dict[str, Any]] = {}
    for rep in range(args.repeats):
        for name, fn in runs.items():
            clock = Clock()
            c0, w0 = time.thread_time(), time.perf_counter()
            acc = fn(model, x, y, args.eps, args.seed + rep, clock)
            cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
            print(f"[{rep}] {name:22s} robust {acc:.4f}  wall {wall:7.2f} s  cpu {cpu:7.2f} s  "
                  + "  ".join(f"{k} {clock.cpu.get(k, 0.0):.2f}" for k in NAMES), flush=True)
            b = best.setdefault(name, {"wall": wall, "cpu": cpu, "acc": [], "per": dict(clock.cpu)})
            b["acc"].append(acc)
            b["wall"] = min(b["wall"], wall)
            if cpu <= b["cpu"]:
                b["cpu"], b["per"] = cpu, dict(clock.cpu)

    lines = table(best, args)
    print("\n".join(lines))
    if out is not None:
        load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
        header = [
            "# Speed of the AutoAttack-equivalent evaluation (standard suite)",
            "",
            (f"Generated by `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/adversarial_suite_speed.py"
            f"{' --n ' + str(args.n) if args.n != 256 else ''}`."),
            "",
            (f"Small CNN naturally trained on digits ({train_s:.1f} CPU-s), clean accuracy {clean:.4f} on the "
            f"first {args.n} test digits; Linf eps = {args.eps}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread, Python {platform.python_version()}; best of {args.repeats} "
            f"interleaved runs; load average at the end {tuple(round(v, 1) for v in load)} on a shared "
            f"machine (CPU time is the reliable column; wall time includes waiting for a core)."),
            "",
            ("One thread, one process, every contender given all examples as one batch: robustlab's "
             "worker processes and side-by-side target classes, its defaults on CPU, are measured on 2 "
             "cores in [adversarial.md](adversarial.md). "
             "robustlab and fra31 run 100 iterations per APGD/APGD-T/FAB run; torchattacks-shipped is "
            "`torchattacks.AutoAttack` as shipped (10 iterations: its attacks' defaults); "
            "torchattacks-fra31 is its attacks set to fra31's settings (100 iterations). Per-attack "
            "columns are CPU seconds of the best run. Robust accuracy lists every run."),
            "",
            ("Where the time goes: on this model every contender is dominated by the model's own "
            "forward/backward passes (one thread: a forward of 122 digits about 0.4 ms, forward + "
            "input-gradient about 2 ms). APGD-T and FAB-T run 9 targets x 100 iterations x "
            "(forward + backward [+ a forward for FAB]) and Square 5000 forwards in all three "
            "fra31-equivalent contenders, so their CPU time cannot drop much below the model's; "
            "robustlab's remaining margin is per-step overhead (Square's window and corner "
            "bookkeeping, FAB's gathers/scatters and box projection). torchattacks-shipped is "
            "faster only because it runs 10 instead of 100 iterations of APGD, APGD-T and FAB "
            "(its Square, 5000 queries as everywhere, is about 80% of its time). Running all 9 targets "
            "of APGD-T/FAB-T as one (9n)-row batch was measured and rejected: on one CPU thread "
            "the larger batch was slower per row (cache), e.g. FAB-T 1.09-1.24 s vs 0.96-1.13 s "
            "sequential at 40 steps, APGD-DLR on 9x122 rows 0.75 s vs APGD-T 0.57 s at 40 steps."),
            "",
        ]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(header + lines) + "\n")
        print(f"wrote {out}")
    return 0


def table(best: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    ref = best.get("robustlab")
    lines = ["| contender | wall s | CPU s | robustlab CPU / this CPU | robust accuracy | "
             + " | ".join(f"{n} CPU s" for n in NAMES) + " |",
             "|---|---:|---:|---:|---|" + "---:|" * len(NAMES)]
    for name, b in best.items():
        ratio = f"{ref['cpu'] / b['cpu']:.2f}" if ref else "-"
        accs = ", ".join(f"{a:.4f}" for a in b["acc"])
        lines.append(f"| {name} | {b['wall']:.2f} | {b['cpu']:.2f} | {ratio} | {accs} | "
                     + " | ".join(f"{b['per'].get(n, 0.0):.2f}" for n in NAMES) + " |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
