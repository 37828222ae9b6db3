"""Tiny models, datasets and probes for the scan tests (importable by a subprocess too)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from robustlab.data import Dataset
from robustlab.scan import Probe, ProbeResult, ResultRow


class PredictInput(nn.Module):
    """Predicts the class written in the first input feature: logits = one_hot(x[:, 0]) * 5."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.scale = nn.Parameter(torch.tensor(5.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(x[:, 0].long(), self.num_classes).float()
        return onehot * self.scale


class WrongOutput(nn.Module):
    """Returns logits of the wrong shape: ``(B, k)`` or, with ``k=None``, a 1-D tensor."""

    def __init__(self, k: int | None) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.k is None:
            return x[:, 0]
        return torch.zeros(x.shape[0], self.k)


def predicted_dataset(preds: list[int], labels: list[int], class_names: list[str] | None = None,
                      name: str = "hand-made") -> Dataset:
    """Tabular data whose first feature is what :class:`PredictInput` predicts."""
    x = torch.tensor(preds, dtype=torch.float32).reshape(-1, 1).repeat(1, 3)
    return Dataset(x, torch.tensor(labels), class_names=class_names, name=name)


def linear_model(seed: int = 0) -> nn.Module:
    """Deterministic small model: the same weights in every process for the same seed."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def tabular_dataset(n: int = 30, seed: int = 0, class_names: list[str] | None = None) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = torch.arange(n) % 3
    return Dataset(x, y, class_names=class_names or ["a", "b", "c"], name="tabular")


class RecordingProbe(Probe):
    """Several jobs; each row records the job index and a draw from the job's generator."""

    title = "Recording probe"

    def __init__(self, *, name: str = "recording", num_jobs: int = 3, fail_jobs: tuple[int, ...] = (),
                 error: type[Exception] = RuntimeError, message: str = "boom") -> None:
        self.name = name
        self.num_jobs = num_jobs
        self.fail_jobs = fail_jobs
        self.error = error
        self.message = message
        self.calls: list[int] = []

    def params(self) -> dict[str, Any]:
        return {"num_jobs": self.num_jobs}

    def jobs(self) -> list[dict[str, Any]]:
        return [{"i": i} for i in range(self.num_jobs)]

    def run(self, model: Any, data: Any, *, job: dict[str, Any], generator: torch.Generator) -> ProbeResult:
        self.calls.append(job["i"])
        if job["i"] in self.fail_jobs:
            raise self.error(self.message)
        draw = float(torch.rand((), generator=generator))
        return ProbeResult(rows=(ResultRow("draw", draw), ResultRow("score", job["i"] / 10, headline=True)),
                           summary=f"job {job['i']}")


class SlowProbe(Probe):
    """Ten slow jobs for the kill-and-resume test; logs "pid job" to a side file when a job starts."""

    name = "slow"
    title = "Slow probe"

    def __init__(self, *, num_jobs: int = 10, delay: float = 0.3, log: str = "") -> None:
        self.num_jobs = num_jobs
        self.delay = delay
        self.log = log

    def params(self) -> dict[str, Any]:
        return {"num_jobs": self.num_jobs, "delay": self.delay}

    def jobs(self) -> list[dict[str, Any]]:
        return [{"i": i} for i in range(self.num_jobs)]

    def run(self, model: Any, data: Any, *, job: dict[str, Any], generator: torch.Generator) -> ProbeResult:
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {job['i']}\n")
        time.sleep(self.delay)
        return ProbeResult(rows=(ResultRow("pid", float(os.getpid())),))


def done_jobs(db: Path) -> int:
    """Jobs stored as done in the results store file ``db`` (0 while it or its schema is missing)."""
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=5)
    try:
        return con.execute("SELECT count(*) FROM jobs WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:  # schema not created yet
        return 0
    finally:
        con.close()


def run_and_kill(script: str, stored: Callable[[], int], *, after: int, timeout: float) -> int:
    """Run ``python -c script``; SIGKILL it once ``stored()`` reaches ``after``; return its pid.

    Fails the test if the process exits by itself or stores nothing within ``timeout`` seconds.
    """
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while stored() < after:
            if proc.poll() is not None:
                pytest.fail(f"subprocess exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"subprocess stored no jobs within {timeout:g} s")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return proc.pid
