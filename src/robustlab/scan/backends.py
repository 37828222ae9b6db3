"""Where a scan's probe jobs run: in this process (``"local"``) or on a Ray cluster (``"ray"``).

An *executor* maps :func:`~robustlab.scan.runner.execute_job` over a list of
:class:`~robustlab.scan.runner.JobTask` s and yields each
:class:`~robustlab.scan.runner.JobOutcome` as soon as it exists. The runner writes every outcome
to the results store in one transaction before it asks for the next one, and only the process
that called :func:`~robustlab.scan.runner.run_scan` (the *driver*) ever writes the SQLite file:
workers only compute and return. So a scan killed at any moment loses only the jobs still in
flight, and the next run with the same settings skips every stored job, whichever backend ran it.

``"local"``
    One job after the other in this process (the default).
``"ray"``
    Every job is a Ray task (Ray's default of one CPU each). The model and the data go to Ray's
    object store once per scan; outcomes come back in the order jobs finish (``ray.wait``).
    ``address`` is passed to ``ray.init`` as is: ``None`` lets Ray choose (the ``RAY_ADDRESS``
    variable, else the latest cluster started on this machine with ``ray start``, else a new local
    Ray), ``"auto"`` requires an existing cluster, ``"host:port"`` names one, ``"local"`` always
    starts a new one. When Ray is already initialised in this process, that session is used
    (``address`` must then be ``None``, ``"auto"`` or that cluster's). Ray stays initialised
    after the scan (as after any ``ray.init``), so further scans in this process reuse it;
    ``ray.shutdown()`` stops it. The
    workers need the same robustlab (and the module of any custom probe) importable. A worker
    that dies (killed, out of memory) fails its job with a one-line error; the job runs again on
    the next resume. Needs ``pip install 'robustlab[ray]'``.

Reproducibility: every job draws its randomness from a generator seeded from (scan seed, probe
name, job key) (:func:`~robustlab.scan.runner.job_seed`), never from the process or the order of
jobs, so Ray and local store the same values. Ray sets ``OMP_NUM_THREADS`` to a task's CPUs (1),
so a model whose floating-point kernels sum in a thread-count dependent order can differ from a
multi-threaded local run in the last bits; timing rows (units ``ms``, ``examples/s``) differ
anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

from robustlab._checks import check_choice, fail
from robustlab.data.dataset import Dataset
from robustlab.scan.runner import JobOutcome, JobTask, execute_job

__all__ = ["BACKENDS", "Executor", "RayExecutor", "check_backend", "get_executor", "local_executor"]

logger = logging.getLogger("robustlab.scan")

#: Backend names :func:`~robustlab.scan.runner.run_scan` accepts.
BACKENDS: tuple[str, ...] = ("local", "ray")

Executor = Callable[[Sequence[JobTask], Any, Dataset], Iterator[JobOutcome]]


def local_executor(tasks: Sequence[JobTask], model: Any, data: Dataset) -> Iterator[JobOutcome]:
    """Run the jobs one after the other in this process.

    A generator: each outcome is stored before the next job starts, so a kill loses one job at most.
    """
    for task in tasks:
        yield execute_job(task, model, data)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        fail("backend", "'local', or 'ray' with Ray installed (pip install 'robustlab[ray]')",
             "'ray' but Ray is not installed", describe_got=False)
    return ray


class RayExecutor:
    """Send every job to Ray as a task; yield outcomes as they complete.

    Parameters
    ----------
    address : str, optional
        Passed to ``ray.init`` when Ray is not initialised yet (see the module notes).
    num_cpus : float, optional
        CPUs Ray reserves for each job; default Ray's (1).
    """

    def __init__(self, *, address: str | None = None, num_cpus: float | None = None) -> None:
        if address is not None and (not isinstance(address, str) or not address.strip()):
            fail("address", "a Ray cluster address ('host:port', 'auto' or 'local')", address)
        if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, (int, float))
                                     or num_cpus <= 0):
            fail("num_cpus", "a positive number of CPUs per job", num_cpus)
        self.address = address
        self.num_cpus = num_cpus

    def _connect(self) -> Any:
        ray = _import_ray()
        if ray.is_initialized():
            current = ray.get_runtime_context().gcs_address
            if self.address not in (None, "auto", current):
                fail("address", f"the cluster Ray is already connected to in this process ({current!r}), "
                     "or left out", self.address)
            return ray
        logger.info("connecting to Ray (address=%s)", self.address)
        try:
            ray.init(address=self.address, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            text = " ".join(str(exc).split())[:300]
            fail("address", "the address of a running Ray cluster, or left out to start a local Ray",
                 f"{self.address!r} ({type(exc).__name__}: {text})", describe_got=False)
        return ray

    def __call__(self, tasks: Sequence[JobTask], model: Any, data: Dataset) -> Iterator[JobOutcome]:
        if not tasks:
            return
        ray = self._connect()
        try:
            model_ref, data_ref = ray.put(model), ray.put(data)
        except Exception as exc:  # an unpicklable callable model, a lambda in the data...
            fail("model", "a picklable model and data for the Ray backend (use backend='local')",
                 f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}", describe_got=False)
        remote = ray.remote(_execute_remote)
        if self.num_cpus is not None:
            remote = remote.options(num_cpus=self.num_cpus)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        pending = {remote.remote(task, model_ref, data_ref): task for task in tasks}
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(ref)
                yield self._outcome(ray, ref, task, started)
        finally:
            # The runner stopped early (fatal error, interrupt): do not leave jobs running for nobody.
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception:  # already finished or the cluster is gone: nothing to stop
                    logger.debug("could not cancel a Ray job", exc_info=True)

    @staticmethod
    def _outcome(ray: Any, ref: Any, task: JobTask, started: str) -> JobOutcome:
        try:
            outcome = ray.get(ref)
        except Exception as exc:  # the worker died or Ray failed; the probe's own errors come back as data
            text = " ".join(str(exc).split())
            return JobOutcome(task, started, 0.0, error=f"{type(exc).__name__} (Ray): {text[:200]}",
                              traceback=str(exc))
        if not isinstance(outcome, JobOutcome):
            return JobOutcome(task, started, 0.0, error=f"Ray returned {type(outcome).__name__}, not a job "
                              "outcome")
        return outcome


def _execute_remote(task: JobTask, model: Any, data: Dataset) -> JobOutcome:
    """The Ray task: the same pure function the local backend calls."""
    return execute_job(task, model, data)


def get_executor(backend: str, *, address: str | None = None) -> Executor:
    """The executor of ``backend``; ``address`` only with ``"ray"``.

    Raises
    ------
    UnknownNameError
        ``backend`` is not one of :data:`BACKENDS`.
    InvalidParameterError
        ``"ray"`` without Ray installed, or ``address`` with ``"local"``.
    """
    check_choice("backend", backend, BACKENDS)
    if backend == "local":
        if address is not None:
            fail("address", "left out with backend='local' (it names a Ray cluster)", address)
        return local_executor
    _import_ray()
    return RayExecutor(address=address)


def check_backend(backend: str, *, address: str | None = None) -> str:
    """Validate a backend (and address) up front, before any training or data loading; return it."""
    get_executor(backend, address=address)
    return backend
