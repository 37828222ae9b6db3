"""Worker processes for :func:`robustlab.adversarial.evaluate`: one attack's chunks side by side.

An evaluation attacks the still-robust examples in chunks, each with its own seeded generator, so
the chunks of one attack are independent. On CPU, where one small model cannot keep two cores busy
through torch's intra-op threads (a forward pass of 64 digits is a few hundred microseconds, most of
it per-op overhead), :class:`ChunkPool` runs them in forked worker processes, one torch thread each.

Why fork: workers inherit the model, the inputs and the attacks as they are (nothing is pickled
but the chunk's indices and the adversarial inputs coming back), and start in milliseconds where a
spawned interpreter would spend seconds importing torch. This is what ``torch.utils.data.DataLoader``
does on Linux, with the same precautions: the worker sets one torch thread before any work and
ignores SIGINT (the parent handles Ctrl-C and terminates the pool). Fork is used only on Linux and
only for CPU inputs (CUDA cannot be forked); elsewhere evaluations run in-process.

Determinism: what a chunk computes depends only on its examples and its seed, not on the process
that runs it, so results are the same for any number of workers as long as the per-process thread
count is the same (torch's float kernels may round differently with another thread count). A
worker reseeds torch's global generator per chunk (a copy of the parent's: the caller's state is
untouched), so a randomised model's draws are reproducible too.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import pickle
import signal
import sys
import traceback
import warnings
from typing import Any

import torch

from robustlab._checks import check_int, describe, fail

__all__ = ["ChunkPool", "NotATensor", "default_workers", "resolve_workers"]

# token -> (model, inputs, labels, attacks, generator device); set just before a pool forks, read by
# its workers (single dict operations and next() on a count are atomic under the GIL: no lock, so a
# child never starts with one held)
_STATE: dict[int, tuple[Any, ...]] = {}
_TOKENS = itertools.count()


def _can_fork() -> bool:
    return (sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def default_workers(device: torch.device) -> int:
    """Worker processes an evaluation uses when ``workers=None``: on CPU (Linux), as many as the
    torch threads the caller allows (``torch.get_num_threads()``, capped by the cores this process
    may run on); elsewhere 1 (in-process)."""
    if device.type != "cpu" or not _can_fork():
        return 1
    return max(1, min(torch.get_num_threads(), _cores()))


def resolve_workers(workers: Any, device: torch.device) -> int:
    """Validate ``workers`` (``None`` or an int >= 1) for inputs on ``device``."""
    if workers is None:
        return default_workers(device)
    workers = check_int("workers", workers, low=1)
    if workers > 1 and device.type != "cpu":
        fail("workers", f"1 for inputs on {device.type} (worker processes are for CPU inputs)", workers)
    if workers > 1 and not _can_fork():
        fail("workers", "1 on this platform (worker processes need Linux's fork, outside a daemon "
                  "process)", workers)
    return workers


class NotATensor:
    """What a worker sends back when an attack returned something other than a tensor."""

    def __init__(self, description: str) -> None:
        self.description = description


class ChunkPool:
    """Runs ``attacks[i](model, inputs[idx], labels[idx], generator=Generator().manual_seed(seed))``
    for many ``(i, idx, seed)`` items, in ``workers`` forked processes (started on first use)."""

    def __init__(self, model: Any, inputs: torch.Tensor, labels: torch.Tensor,
                 attacks: tuple[Any, ...], *, workers: int, max_items: int,
                 generator_device: torch.device) -> None:
        self._state = (model, inputs, labels, attacks, generator_device)
        self._workers = max(1, min(workers, max_items))
        self._pool: Any = None
        self._token: int | None = None

    def __enter__(self) -> ChunkPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(terminate=exc[0] is not None)

    def close(self, *, terminate: bool = False) -> None:
        if self._pool is not None:
            if terminate:
                self._pool.terminate()
            else:
                self._pool.close()
            self._pool.join()
            self._pool = None
        if self._token is not None:
            _STATE.pop(self._token, None)
            self._token = None

    def run(self, items: list[tuple[int, torch.Tensor, int]]) -> list[Any]:
        """For each ``(attack index, example indices, seed)``, in order, the attack's output
        (adversarial inputs, or whatever it returned). Warnings a worker caught are re-issued here;
        an exception in a worker is raised here. A single item runs in this process."""
        if self._workers <= 1 or len(items) <= 1:
            return [_attack_chunk(self._state, i, idx, seed, reseed=False) for i, idx, seed in items]
        pool = self._start()
        out = []
        for status, value, caught in pool.imap(_worker_chunk, [(self._token, *item) for item in items],
                                               chunksize=1):
            for category, message in caught:
                warnings.warn(message, category, stacklevel=2)
            if status == "error":
                raise value
            out.append(value)
        return out

    def _start(self) -> Any:
        if self._pool is None:
            self._token = next(_TOKENS)
            _STATE[self._token] = self._state
            self._pool = multiprocessing.get_context("fork").Pool(processes=self._workers,
                                                                  initializer=_worker_init)
        return self._pool


def _attack_chunk(state: tuple[Any, ...], attack_index: int, idx: torch.Tensor, seed: int,
                  *, reseed: bool) -> Any:
    model, inputs, labels, attacks, generator_device = state
    if reseed:
        torch.manual_seed(seed)
    g = torch.Generator(device=generator_device).manual_seed(seed)
    result = attacks[attack_index](model, inputs[idx], labels[idx], generator=g)
    adv = getattr(result, "adv_inputs", result)
    return adv.detach() if isinstance(adv, torch.Tensor) else adv


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates the pool
    torch.set_num_threads(1)


def _worker_chunk(item: tuple[int, int, torch.Tensor, int]) -> tuple[str, Any, list[tuple[type, str]]]:
    token, attack_index, idx, seed = item
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            adv = _attack_chunk(_STATE[token], attack_index, idx, seed, reseed=True)
            if isinstance(adv, torch.Tensor):
                adv = adv.contiguous()  # a view would send its whole storage back
            else:  # the parent refuses it; only its description travels back
                adv = NotATensor(describe(adv))
            status, value = "ok", adv
        except Exception as exc:  # noqa: BLE001 - re-raised in the parent
            status, value = "error", _picklable(exc)
    return status, value, [(w.category, str(w.message)) for w in caught]


def _picklable(exc: Exception) -> Exception:
    text = "".join(traceback.format_exception(exc)).rstrip()
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
    exc.add_note(f"(raised in an evaluation worker process)\n{text}")
    return exc
