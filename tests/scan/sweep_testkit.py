"""Probe, models and helpers for the sweep and Ray tests (importable by a subprocess and Ray workers)."""

from __future__ import annotations

import math
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import torch

from robustlab.scan import PROBES, Probe, ProbeResult, ResultRow

DATA = "wine"  # built-in, 178 tabular examples: loads in milliseconds


class DrawProbe(Probe):
    """Jobs whose values depend on the job's generator and on the model; optionally slow and logged.

    Each job stores a draw of its generator and the sum of the model's logits on the data, so a
    job run anywhere must give the same values; ``log`` gets "generator-seed" per started job.
    """

    name = "draws"
    title = "Draws"

    def __init__(self, *, num_jobs: int = 4, delay: float = 0.0, log: str = "", scale: float = 1.0) -> None:
        self.num_jobs = num_jobs
        self.delay = delay
        self.log = log
        self.scale = scale

    def params(self) -> dict[str, Any]:
        # delay and log do not change the values: they are not part of the probe's identity
        return {"num_jobs": self.num_jobs, "scale": self.scale}

    def jobs(self) -> list[dict[str, Any]]:
        return [{"i": i} for i in range(self.num_jobs)]

    def run(self, model: Any, data: Any, *, job: dict[str, Any], generator: torch.Generator) -> ProbeResult:
        if self.log:
            with open(self.log, "a", encoding="utf-8") as fh:
                fh.write(f"{generator.initial_seed()}\n")
        time.sleep(self.delay)
        draw = float(torch.rand((), generator=generator)) * self.scale
        with torch.no_grad():
            inputs, _ = data.load(torch.arange(min(32, len(data))))
            logit_sum = float(model(inputs).double().sum())
        return ProbeResult(rows=(ResultRow("draw", draw, headline=True), ResultRow("logit_sum", logit_sum),
                                 ResultRow("pid", float(os.getpid()), unit="pid")))


if "draws" not in PROBES.names():
    PROBES.register("draws", DrawProbe)


def save_models(folder: Path, seeds: tuple[int, ...] = (0, 1)) -> list[Path]:
    """Untrained MLPs for the wine data (distinct weights per seed) saved as robustlab model folders."""
    from robustlab import zoo
    from robustlab.models import save_model

    train, _ = zoo.load_splits(DATA)
    paths = []
    for seed in seeds:
        net, config = zoo.build_for_data("mlp", train, seed=seed, arch_params={"hidden_sizes": (8,)})
        paths.append(save_model(net, folder / f"net{seed}" / "model", config))
    return paths


def stored(run_dir: Path) -> dict[tuple[str, str, str], float]:
    """{(probe, job, metric + params): value} of a run folder, without process-dependent rows."""
    from robustlab.scan import ResultsStore

    with ResultsStore(run_dir, create=False) as store:
        (run,) = store.runs()
        rows = store.results(run.run_id)
    out: dict[tuple[str, str, str], float] = {}
    for r in rows:
        if r.unit in ("ms", "examples/s", "pid"):
            continue
        key = (r.probe, repr(sorted(r.job.items())), f"{r.metric}{sorted(r.params.items())}")
        assert key not in out, f"stored twice: {key}"
        out[key] = r.value
    return out


def same_values(a: dict[Any, float], b: dict[Any, float]) -> bool:
    """Equal keys and bit-identical values (NaN equal to NaN)."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def done_jobs(out: Path) -> int:
    """Done jobs summed over every results store under ``out`` (0 while none exists)."""
    from scan_testkit import (
        done_jobs as done_in,  # test process only: workers never call this
    )

    return sum(done_in(db) for db in out.glob("*/results.sqlite"))


def job_rows(run_dir: Path) -> list[tuple[str, str, str]]:
    """Every stored (probe, job key, status) of a run folder, read with plain SQL (duplicates visible)."""
    con = sqlite3.connect(run_dir / "results.sqlite", timeout=5)
    try:
        return con.execute("SELECT probe, job_key, status FROM jobs").fetchall()
    finally:
        con.close()
