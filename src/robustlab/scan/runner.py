"""The scan runner: run every job of every probe, store each in one transaction, write the report.

Resume: a scan started again with the same model, data and seed, into the same folder, reuses its
run and skips every job already stored, however the earlier process ended. More probes extend the
run; a probe whose settings changed has its jobs computed again.

Failures: a probe job that raises is stored as failed with a one-line error and the scan goes on
with the other jobs; failed jobs run again on the next resume. The exception is
:class:`~robustlab.errors.ModelOutputError`: the model does not produce ``(N, K)`` logits for this
data, so every other probe would fail the same way; the scan stops and raises it (the model is
also checked on a few examples before any job runs).

Backends: ``"local"`` runs jobs one after the other in this process; ``"ray"`` sends them to a
Ray cluster (:mod:`robustlab.scan.backends`). Jobs are independent :class:`JobTask` s executed by
:func:`execute_job`, a pure function of (task, model, data), and an executor yields their
:class:`JobOutcome` s as they finish; only this process writes to the store, one transaction per
job, so a kill loses only the jobs in flight on either backend.
"""

from __future__ import annotations

import hashlib
import logging
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import torch

from robustlab._checks import check_int, check_writable_dir, fail
from robustlab._constants import DEFAULT_SEED, EVAL_BATCH_SIZE, SCAN_ERROR_MAX_CHARS, STORE_FILENAME
from robustlab._progress import progress as progress_bar
from robustlab.data.dataset import Dataset
from robustlab.errors import InvalidTypeError, ModelOutputError
from robustlab.models.inference import predict_logits
from robustlab.scan.probe import Probe, ProbeResult, canonical_json, job_label, json_text
from robustlab.scan.report import write_report
from robustlab.scan.store import ResultRecord, ResultsStore

__all__ = ["run_scan", "ScanSummary", "Headline", "FailedJob", "JobTask", "JobOutcome", "execute_job",
           "job_seed", "BACKENDS"]

logger = logging.getLogger("robustlab.scan")

#: Errors that stop the whole scan instead of failing one job (see the module docstring).
FATAL_ERRORS: tuple[type[Exception], ...] = (ModelOutputError,)

#: Examples run through the model before any job, to catch a model that does not fit the data.
_PREFLIGHT_EXAMPLES = 4


class Headline(NamedTuple):
    """A headline value: ``metric`` carries its params, e.g. ``"robust_accuracy[eps=0.03]"``."""

    probe: str
    metric: str
    value: float


class FailedJob(NamedTuple):
    """A job that raised: its probe, readable job label (``"all"`` for a single-job probe), error."""

    probe: str
    job: str
    error: str


@dataclass(frozen=True)
class ScanSummary:
    """What :func:`run_scan` did.

    Attributes
    ----------
    run_id : str
    out_dir, store_path, report_path : Path
    jobs_run : int
        Jobs executed by this call (successful or failed).
    jobs_skipped : int
        Jobs found already stored and not run again.
    failed : tuple of FailedJob
    headline : tuple of Headline
        The run's headline values, from the store (so including jobs of earlier calls).
    """

    run_id: str
    out_dir: Path
    store_path: Path
    report_path: Path
    jobs_run: int
    jobs_skipped: int
    failed: tuple[FailedJob, ...]
    headline: tuple[Headline, ...]


@dataclass(frozen=True)
class JobTask:
    """One job to execute: the probe, its job key (dict and canonical JSON) and its seed."""

    probe: Probe
    job: dict[str, Any]
    key: str
    seed: int


@dataclass(frozen=True)
class JobOutcome:
    """Result of :func:`execute_job`: ``result`` on success, else ``error`` (one line) and traceback."""

    task: JobTask
    started: str
    seconds: float
    result: ProbeResult | None = None
    error: str | None = None
    traceback: str | None = None
    fatal: BaseException | None = None


Executor = Callable[[Sequence[JobTask], Any, Dataset], Iterator[JobOutcome]]


# --------------------------------------------------------------------------- jobs
def job_seed(seed: int, probe: str, job_key: str) -> int:
    """Seed of one job's generator: a SHA-256 of (seed, probe, job key), not Python's salted ``hash``.

    The same job gets the same seed in every process and whatever other jobs exist.
    """
    digest = hashlib.sha256(f"{seed}\x00{probe}\x00{job_key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def execute_job(task: JobTask, model: Any, data: Dataset) -> JobOutcome:
    """Run one job with its own generator and capture what happened; never raises for probe errors."""
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    generator = torch.Generator().manual_seed(task.seed)
    start = time.perf_counter()
    try:
        result = task.probe.run(model, data, job=dict(task.job), generator=generator)
        if not isinstance(result, ProbeResult):
            fail(f"{task.probe.name}.run", "a function returning a ProbeResult", result, error=InvalidTypeError)
    except Exception as exc:  # a probe failure is data for the report, not a crash of the scan
        return JobOutcome(task, started, time.perf_counter() - start, error=_one_line(exc),
                          traceback=traceback.format_exc(),
                          fatal=exc if isinstance(exc, FATAL_ERRORS) else None)
    return JobOutcome(task, started, time.perf_counter() - start, result=result)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= SCAN_ERROR_MAX_CHARS else text[:SCAN_ERROR_MAX_CHARS - 3] + "..."


#: Backend names ``run_scan`` accepts (executors in :mod:`robustlab.scan.backends`).
BACKENDS: tuple[str, ...] = ("local", "ray")


def check_backend(backend: str, *, address: str | None = None) -> str:
    """Validate a backend name (and Ray address) up front, before any training or data loading."""
    _executor(backend, address)
    return backend


def _executor(backend: str, address: str | None = None) -> Executor:
    from robustlab.scan.backends import get_executor  # backends imports this module

    return get_executor(backend, address=address)


# --------------------------------------------------------------------------- identity
def fingerprint_model(model: Any) -> str | None:
    """SHA-256 of a module's class and state dict (names, dtypes, shapes, bytes); ``None`` otherwise."""
    if not isinstance(model, torch.nn.Module):
        return None
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint_data(data: Dataset) -> str:
    """SHA-256 of every input and label, the class names and the kind.

    Reads the whole dataset once (in evaluation batches): cheap next to any probe, and it means a
    run is only reused for exactly the same data.
    """
    h = hashlib.sha256(canonical_json([data.kind, list(data.class_names), list(data.input_shape)]).encode())
    for batch in data.batches(EVAL_BATCH_SIZE):
        h.update(batch.inputs.detach().cpu().contiguous().numpy().tobytes())
        h.update(batch.labels.cpu().numpy().tobytes())
    return h.hexdigest()


def _key_config(model: Any, data: Dataset, seed: int, model_info: Mapping[str, Any]) -> dict[str, Any]:
    # Descriptions (paths, "trained" vs "cached") are not identity: the weights and data are.
    # Probes are not part of it either: scanning again with more (or other) probes extends the
    # same run, and a probe whose settings changed has its jobs recomputed (ResultsStore.add_probe).
    model_id = fingerprint_model(model)
    return {
        "model": model_id if model_id is not None else dict(model_info),
        "data": fingerprint_data(data),
        "seed": seed,
    }


def _probe_params(probe: Probe) -> dict[str, Any]:
    params = probe.params()
    if not isinstance(params, Mapping):
        fail(f"{probe.name}.params()", "a dict of settings", params, error=InvalidTypeError)
    return dict(params)


def _info(name: str, info: Any) -> dict[str, Any]:
    if not isinstance(info, Mapping):
        fail(name, "a dict (JSON-serialisable description)", info, error=InvalidTypeError)
    json_text(dict(info), name=name)
    return dict(info)


def _default_model_info(model: Any) -> dict[str, Any]:
    if not isinstance(model, torch.nn.Module):
        fail("model_info", "a dict describing the model when 'model' is not a torch.nn.Module (it "
             "identifies the scan on resume)", None)
    return {"name": type(model).__name__, "num_parameters": sum(p.numel() for p in model.parameters())}


# --------------------------------------------------------------------------- validation
def _check_probes(probes: Any) -> list[Probe]:
    if isinstance(probes, (str, bytes)) or not isinstance(probes, Sequence) or not probes:
        fail("probes", "a non-empty list of probes (see build_probe)", probes, error=InvalidTypeError)
    for p in probes:
        if not isinstance(p, Probe):
            fail("probes", "a list of Probe objects (name, title, params(), jobs(), run())", p,
                 error=InvalidTypeError)
    names = [p.name for p in probes]
    if len(set(names)) != len(names):
        fail("probes", "probes with distinct names", names)
    return list(probes)


def _probe_tasks(probe: Probe, seed: int) -> list[JobTask]:
    jobs = probe.jobs()
    if not isinstance(jobs, (list, tuple)) or not jobs or not all(isinstance(j, Mapping) for j in jobs):
        fail(f"{probe.name}.jobs()", "a non-empty list of dicts (job keys)", jobs, error=InvalidTypeError)
    tasks = []
    for job in jobs:
        key = canonical_json(dict(job), name=f"{probe.name}.jobs()")
        tasks.append(JobTask(probe, dict(job), key, job_seed(seed, probe.name, key)))
    if len({t.key for t in tasks}) != len(tasks):
        fail(f"{probe.name}.jobs()", "distinct job keys", jobs)
    return tasks


def _preflight(model: Any, data: Dataset) -> None:
    """Fail fast, before anything is stored, when the model does not give ``(N, K)`` logits."""
    if len(data) == 0:
        fail("data", "a Dataset with at least one example", data)
    head = data.subset(torch.arange(min(len(data), _PREFLIGHT_EXAMPLES)))
    predict_logits(model, head)


# --------------------------------------------------------------------------- the runner
def run_scan(
    model: Any,
    data: Dataset,
    probes: Sequence[Probe],
    *,
    out_dir: str | Path,
    seed: int = DEFAULT_SEED,
    model_info: Mapping[str, Any] | None = None,
    data_info: Mapping[str, Any] | None = None,
    backend: str = "local",
    address: str | None = None,
    progress: bool | None = None,
) -> ScanSummary:
    """Run every job of every probe, store each as it finishes, and write the HTML report.

    Parameters
    ----------
    model : nn.Module or callable
        Maps a float batch to logits ``(B, K)``. A callable that is not a module needs ``model_info``.
    data : Dataset
    probes : list of Probe
        Distinct names; e.g. ``[build_probe("clean")]``.
    out_dir : path-like
        Run folder; created if needed. Holds ``results.sqlite`` and ``report.html``.
    seed : int, default 0
        Every job gets a ``torch.Generator`` seeded from (seed, probe name, job key).
    model_info, data_info : dict, optional
        JSON-serialisable descriptions for the report. Defaults: class name and parameter count;
        ``data.info()``. They do not identify the run: the weights, the data and the seed do (for a
        non-module callable, ``model_info`` does); probe settings identify each probe's jobs.
    backend : {"local", "ray"}, default "local"
        Where jobs run: one after the other in this process, or as Ray tasks (needs
        ``pip install 'robustlab[ray]'``; see :mod:`robustlab.scan.backends`). Either way only
        this process writes the store, and the stored values are the same.
    address : str, optional
        Ray cluster address for ``backend="ray"`` (passed to ``ray.init``; default: Ray's choice,
        or the session already initialised in this process).
    progress : bool, optional
        Progress bar; ``None`` shows it only on a terminal.

    Returns
    -------
    ScanSummary

    Raises
    ------
    OutputDirError
        ``out_dir`` cannot be created or written.
    ModelOutputError
        The model does not return ``(N, K)`` logits for ``data``; the scan stops.
    """
    executor = _executor(backend, address)
    if not isinstance(data, Dataset):
        fail("data", "a robustlab Dataset", data, error=InvalidTypeError)
    probes = _check_probes(probes)
    seed = check_int("seed", seed, low=0)
    model_info = _info("model_info", model_info) if model_info is not None else _default_model_info(model)
    data_info = _info("data_info", data_info) if data_info is not None else data.info()
    tasks = [t for p in probes for t in _probe_tasks(p, seed)]
    _preflight(model, data)
    out = check_writable_dir("out_dir", out_dir)  # only now: bad input leaves no folder behind
    key_config = _key_config(model, data, seed, model_info)
    with ResultsStore(out / STORE_FILENAME) as store:
        run_id = store.start_run(key_config, model_info=model_info, data_info=data_info)
        for position, p in enumerate(probes):
            store.add_probe(run_id, p.name, title=str(p.title), params=_probe_params(p), position=position)
        pending = [t for t in tasks if not store.is_done(run_id, t.probe.name, t.key)]
        logger.info("run %s: %d jobs to run, %d already stored", run_id, len(pending), len(tasks) - len(pending))
        failed = _run_pending(store, run_id, executor(pending, model, data), total=len(tasks),
                              done=len(tasks) - len(pending), show=progress)
        store.finish_run(run_id, "incomplete" if failed else "complete")
        headline = _headline(store.results(run_id), [p.name for p in probes])
    report = write_report(out / STORE_FILENAME, run_id=run_id)
    return ScanSummary(run_id=run_id, out_dir=out, store_path=out / STORE_FILENAME, report_path=report,
                       jobs_run=len(pending), jobs_skipped=len(tasks) - len(pending),
                       failed=tuple(failed), headline=headline)


def _run_pending(store: ResultsStore, run_id: str, outcomes: Iterable[JobOutcome], *, total: int,
                 done: int, show: bool | None) -> list[FailedJob]:
    failed: list[FailedJob] = []
    with progress_bar("robustlab scan", total, enabled=show) as bar:
        bar.advance(done)
        for outcome in outcomes:
            task = outcome.task
            bar.update(description=f"scan: {task.probe.name}")
            if outcome.result is not None:
                store.write_job(run_id, task.probe.name, task.key, outcome.result, seconds=outcome.seconds,
                                started=outcome.started)
                logger.info("%s [%s] done in %.2f s", task.probe.name, job_label(task.job), outcome.seconds)
            else:
                _store_failure(store, run_id, outcome)
                failed.append(FailedJob(task.probe.name, job_label(task.job), str(outcome.error)))
            bar.advance()
    return failed


def _store_failure(store: ResultsStore, run_id: str, outcome: JobOutcome) -> None:
    task = outcome.task
    store.fail_job(run_id, task.probe.name, task.key, str(outcome.error), seconds=outcome.seconds,
                   started=outcome.started, traceback=outcome.traceback)
    if outcome.fatal is not None:
        store.finish_run(run_id, "failed")
        raise outcome.fatal
    logger.warning("%s [%s] failed: %s", task.probe.name, job_label(task.job), outcome.error)
    logger.debug("%s", outcome.traceback)


def _headline(results: list[ResultRecord], order: list[str]) -> tuple[Headline, ...]:
    rank = {name: i for i, name in enumerate(order)}
    rows = sorted((r for r in results if r.headline), key=lambda r: rank.get(r.probe, len(rank)))
    return tuple(Headline(r.probe, _metric_label(r), r.value) for r in rows)


def _metric_label(record: ResultRecord) -> str:
    params = {**record.job, **record.params}
    if not params:
        return record.metric
    return f"{record.metric}[{job_label(params)}]"
