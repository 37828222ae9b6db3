"""The one training loop: :class:`Trainer`.

Every training method in robustlab runs through :meth:`Trainer.fit`; methods differ only in their
:class:`~robustlab.training.Objective`. The loop owns what every method needs and no method
should re-implement: data order, optimizer and schedule, gradient clipping, validation, history,
per-example records, atomic checkpoints and exact resume.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robustlab._checks import check_bool, check_logits, check_writable_dir, describe, fail
from robustlab._constants import TRAIN_CHECKPOINT_FILENAME
from robustlab._model_state import preserve_state
from robustlab._progress import progress
from robustlab.data.dataset import Batch, Dataset
from robustlab.errors import CheckpointError, InvalidParameterError, InvalidTypeError, OutputDirError
from robustlab.models.inference import predict_logits
from robustlab.training.checkpoint import load_checkpoint, save_checkpoint
from robustlab.training.config import TrainConfig
from robustlab.training.objective import Objective, ObjectiveOutput, build_objective
from robustlab.training.optim import build_optimizer, build_scheduler, sam_perturb, sam_restore
from robustlab.training.records import EpochRecorder, TrainingRecords

__all__ = ["Trainer", "TrainResult"]

logger = logging.getLogger("robustlab.training")

# Independent random streams derived from config.seed, so that e.g. an objective drawing more
# random numbers does not change the data order (runs with different methods see the same batches).
_STREAM_SHUFFLE, _STREAM_OBJECTIVE, _STREAM_MODEL = 0, 1, 2

_CHECKPOINT_KEYS = ("epoch", "step", "config", "objective", "data", "model", "optimizer",
                    "scheduler", "rng", "history", "records")


@dataclass(frozen=True, eq=False)
class TrainResult:
    """Outcome of :meth:`Trainer.fit`.

    Attributes
    ----------
    model : nn.Module
        The trained model (the object passed to the Trainer, trained in place).
    history : list of dict
        One dict per epoch: ``epoch`` (0-based), ``train_loss`` (objective loss, mean over
        examples), ``train_acc`` (from the training forward passes; None if the objective returns
        no logits), ``val_loss`` / ``val_acc`` (cross entropy and accuracy on ``val`` in eval
        mode; None when not evaluated that epoch), ``lr`` (of the first parameter group at the
        epoch's first step), ``seconds`` and ``metrics`` (the objective's metrics, epoch means,
        plus its :meth:`~robustlab.training.BaseObjective.epoch_metrics`). With ``val_metrics``
        given to :meth:`Trainer.fit`, also ``val_<name>`` for each number it returns (absent on
        epochs without validation). Shorter than ``config.epochs`` when the objective asked to
        stop early (:meth:`~robustlab.training.BaseObjective.should_stop`).
    records : TrainingRecords or None
        Per-example records when ``config.record_examples``.
    best_val_acc, final_val_acc : float or None
        Best and last validation accuracy; None without ``val``.
    seconds : float
        Training time summed over all epochs, including those run before a resume.
    """

    model: torch.nn.Module
    history: list[dict[str, Any]]
    records: TrainingRecords | None
    best_val_acc: float | None
    final_val_acc: float | None
    seconds: float


class Trainer:
    """Train a model with an objective; the loop every training method shares.

    Parameters
    ----------
    model : nn.Module
        Maps a batch of inputs to logits ``(N, K)``. Trained in place; only parameters with
        ``requires_grad=True`` are optimised. Moved to ``config.device`` when that is set.
    objective : Objective or str
        The training method (e.g. :class:`~robustlab.training.CrossEntropy`), or a registered
        name built with default options.
    config : TrainConfig, optional
        Defaults to ``TrainConfig()``.

    Notes
    -----
    Each epoch: shuffle with a ``torch.Generator`` seeded from ``config.seed``; for each batch
    ``objective.compute`` -> ``loss.backward()`` -> optional ``clip_grad_norm_`` ->
    ``optimizer.step()`` -> ``scheduler.step()``; then validation and the checkpoint.

    **SAM** (``config.sam_rho``): after the first backward pass the weights move to
    ``w + e(w)`` (:func:`~robustlab.training.optim.sam_perturb`), ``objective.compute`` runs a
    second time on the same batch, its gradient replaces the first, the weights are restored and
    the base optimizer steps (Foret et al., 2021, Alg. 1). The objective's generator is rewound
    for the second pass, so both passes draw the same random numbers; an objective that updates
    its own state inside ``compute`` sees two calls with the same ``step`` and should update only
    on the first. The model's buffers (batch-norm running statistics) are restored after the
    second pass: only the unperturbed pass updates them. History, accuracy and per-example
    records come from the first pass.

    **Determinism.** On CPU the same seed gives bit-identical weights, and a resumed run ends
    bit-identical to an uninterrupted one. Covered: data order, the objective's ``generator``,
    and randomness inside the model or objective that uses torch's *global* RNG (dropout,
    ``torch.rand``) on the CPU and on a CUDA training device. For that, :meth:`fit` runs inside
    :func:`torch.random.fork_rng`, seeds the forked global RNG from ``config.seed`` and saves its
    state in checkpoints; the caller's global RNG state is unchanged afterwards. Not covered:
    non-deterministic GPU kernels (robustlab does not switch on
    ``torch.use_deterministic_algorithms``, a process-wide setting) and global RNGs of other
    accelerator types.

    **Model state.** ``fit`` puts the model in train mode for training steps and eval mode for
    validation, and restores every submodule's original mode (and ``requires_grad`` flags) when it
    returns or fails.

    Examples
    --------
    >>> import torch
    >>> from robustlab.data import Dataset
    >>> from robustlab.training import CrossEntropy, TrainConfig, Trainer
    >>> x = torch.randn(64, 2); y = (x[:, 0] > 0).long()
    >>> model = torch.nn.Linear(2, 2)
    >>> result = Trainer(model, CrossEntropy(), TrainConfig(epochs=5, batch_size=16)).fit(Dataset(x, y))
    >>> len(result.history)
    5
    """

    def __init__(self, model: torch.nn.Module, objective: Objective | str,
                 config: TrainConfig | None = None) -> None:
        self.model = model
        self.objective = objective
        self.config = config

    def fit(
        self,
        train: Dataset,
        *,
        val: Dataset | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        resume: bool = False,
        val_metrics: Callable[[torch.nn.Module, Dataset], Mapping[str, float]] | None = None,
    ) -> TrainResult:
        """Train for ``config.epochs`` epochs (or the epochs left, when resuming).

        Parameters
        ----------
        train : Dataset
            Training data (at least one example, at least two classes).
        val : Dataset, optional
            Evaluated every ``config.eval_every`` epochs and after the last.
        run_dir : path, optional
            Folder for the checkpoint (``checkpoint.pt``), written every
            ``config.checkpoint_every`` epochs and after the last. A folder that already holds a
            checkpoint is refused unless ``resume=True``.
        resume : bool, default False
            Continue from the checkpoint in ``run_dir``. Its config must match ``config`` except
            ``eval_every``, ``checkpoint_every`` and ``device``; the objective name and the number
            of examples and classes must match too.
        val_metrics : callable, optional
            ``val_metrics(model, val) -> {name: float}``, run after the clean validation pass
            (same epochs); each number is stored as ``history[e]["val_" + name]`` (e.g.
            :func:`robustlab.adversarial.training.robust_accuracy_metric` for a PGD robust
            accuracy curve). It must leave the model's state as it found it (attacks do).

        Returns
        -------
        TrainResult

        Raises
        ------
        ModelOutputError
            The model does not return ``(N, train.num_classes)`` logits (checked on one batch
            before training).
        CheckpointError
            On resume: the checkpoint is missing, corrupt, or from a different run.
        """
        model, objective, config = self._checked()
        check_bool("resume", resume)
        _check_data(train, val)
        if val_metrics is not None and not callable(val_metrics):
            fail("val_metrics", "None or a callable (model, val) -> dict of floats", val_metrics,
                 error=InvalidTypeError)
        checkpoint_path = _checkpoint_path(run_dir, resume=resume)
        device = _resolve_device(model, config)
        model.to(device)
        # One eval-mode batch: a wrong architecture fails here in one line, before any state changes.
        predict_logits(model, train.subset(torch.arange(min(2, len(train)))), device=device)
        with preserve_state(model), _isolated_global_rng(device):
            run = _Run(model, objective, config, train, device)
            if resume:
                run.load(load_checkpoint(checkpoint_path), source=str(checkpoint_path))
            run.train(val=val, checkpoint_path=checkpoint_path, val_metrics=val_metrics)
        return run.result()

    def _checked(self) -> tuple[torch.nn.Module, Objective, TrainConfig]:
        if not isinstance(self.model, torch.nn.Module):
            fail("model", "a torch.nn.Module", self.model, error=InvalidTypeError)
        objective = self.objective
        if isinstance(objective, str):
            objective = build_objective(objective)
        if not isinstance(objective, Objective):
            fail("objective", "an Objective (subclass robustlab.training.BaseObjective) or a "
                 "registered objective name", objective, error=InvalidTypeError)
        config = TrainConfig() if self.config is None else self.config
        if not isinstance(config, TrainConfig):
            fail("config", "a robustlab.training.TrainConfig", config, error=InvalidTypeError)
        return self.model, objective, config


class _Run:
    """Mutable state of one :meth:`Trainer.fit` call: everything a checkpoint holds."""

    def __init__(self, model: torch.nn.Module, objective: Objective, config: TrainConfig,
                 train: Dataset, device: torch.device) -> None:
        self.model, self.objective, self.config = model, objective, config
        self.train_data, self.device = train, device
        self.shuffle_generator = _generator(config.seed, _STREAM_SHUFFLE)
        self.objective_generator = _generator(config.seed, _STREAM_OBJECTIVE)
        _seed_global_rng(device, _stream_seed(config.seed, _STREAM_MODEL))
        objective.setup(model=model, train=train, config=config, device=device,
                        generator=self.objective_generator)
        self.optimizer = build_optimizer(_trainable(model, objective), config)
        self.parameters = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.steps_per_epoch = train.num_batches(config.batch_size)
        self.scheduler = build_scheduler(self.optimizer, config, steps_per_epoch=self.steps_per_epoch)
        self.records = TrainingRecords.empty(config.epochs, len(train)) if config.record_examples else None
        self.history: list[dict[str, Any]] = []
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken

    # ------------------------------------------------------------------ loop
    def train(self, *, val: Dataset | None, checkpoint_path: Path | None,
              val_metrics: Callable[[torch.nn.Module, Dataset], Mapping[str, float]] | None = None) -> None:
        epochs = self.config.epochs
        total = (epochs - self.epoch) * self.steps_per_epoch
        with progress("training", total=total) as bar:
            for epoch in range(self.epoch, epochs):
                if _stop_requested(self.objective):  # a resumed run that had stopped early
                    break
                bar.update(description=f"epoch {epoch + 1}/{epochs}")
                started = time.perf_counter()
                lr = float(self.optimizer.param_groups[0]["lr"])
                train_stats = self._train_epoch(epoch, bar)
                evaluate = val is not None and self._due(epoch, self.config.eval_every)
                val_stats = (_evaluate(self.model, val, self.device) if evaluate
                             else {"val_loss": None, "val_acc": None})
                if val_metrics is not None:
                    val_stats.update(_extra_val_metrics(val_metrics, self.model, val, evaluate))
                row = {"epoch": epoch, "train_loss": train_stats["train_loss"],
                       "train_acc": train_stats["train_acc"], **val_stats, "lr": lr,
                       "seconds": time.perf_counter() - started, "metrics": train_stats["metrics"]}
                self.history.append(row)
                self.epoch = epoch + 1
                _log_epoch(row, epochs)
                stop = _stop_requested(self.objective)
                if checkpoint_path is not None and (stop or self._due(epoch, self.config.checkpoint_every)):
                    save_checkpoint(self.state_dict(), checkpoint_path)
                if stop:
                    logger.warning("objective %r stopped training after epoch %d of %d",
                                   self.objective.name, epoch + 1, epochs)
                    break

    def _due(self, epoch: int, every: int) -> bool:
        return (epoch + 1) % every == 0 or epoch + 1 == self.config.epochs

    def _train_epoch(self, epoch: int, bar: Any) -> dict[str, Any]:
        self.objective.on_epoch_start(epoch)
        stats = _EpochStats(self.device)
        recorder = EpochRecorder(len(self.train_data), self.device) if self.records is not None else None
        batches = self.train_data.batches(self.config.batch_size, shuffle=True,
                                          generator=self.shuffle_generator)
        for batch in batches:
            batch = Batch(*(t.to(self.device) for t in batch))
            out = self._step(batch, epoch)
            stats.add(out, batch)
            if recorder is not None:
                recorder.add(batch.indices, out.logits, batch.labels)
            bar.advance()
        self.objective.on_epoch_end(epoch)
        if recorder is not None:
            recorder.write(self.records, epoch)
        summary = stats.summary(epoch)
        epoch_metrics = getattr(self.objective, "epoch_metrics", None)
        if callable(epoch_metrics):
            summary["metrics"].update({str(k): float(v) for k, v in epoch_metrics().items()})
        return summary

    def _step(self, batch: Batch, epoch: int) -> ObjectiveOutput:
        sam = self.config.sam_rho is not None
        generator_state = self.objective_generator.get_state() if sam else None
        self.model.train()  # an objective may have switched to eval mode (e.g. to attack)
        out = self.objective.compute(self.model, batch, epoch=epoch, step=self.step)
        _check_output(out, batch, self.objective.name, self.train_data.num_classes,
                      need_logits=self.records is not None)
        # Zeroed after compute: gradients an objective took internally (attacks) must not leak in.
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if sam:
            self._sam_gradient(batch, epoch, generator_state)
        if self.config.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.config.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.objective.on_step_end(epoch=epoch, step=self.step)
        self.step += 1
        return out

    def _sam_gradient(self, batch: Batch, epoch: int, generator_state: torch.Tensor) -> None:
        """Replace the gradients by SAM's: the gradient of the same objective at ``w + e(w)``.

        The second ``compute`` sees the same batch, the same ``epoch``/``step`` and the
        objective generator rewound to its state before the first pass (so mixup mixes the same
        pairs, random starts repeat); the model's buffers (batch-norm running statistics) are
        restored afterwards, so only the first, unperturbed pass updates them. The weights are
        restored bit-exactly before the base optimizer steps.
        """
        originals = sam_perturb(self.parameters, rho=self.config.sam_rho,
                                adaptive=self.config.sam_adaptive)
        buffers = [(b, b.detach().clone()) for b in self.model.buffers()]
        try:
            self.optimizer.zero_grad(set_to_none=True)
            self.objective_generator.set_state(generator_state)
            self.model.train()
            out = self.objective.compute(self.model, batch, epoch=epoch, step=self.step)
            _check_output(out, batch, self.objective.name, self.train_data.num_classes, need_logits=False)
            out.loss.backward()
        finally:
            sam_restore(self.parameters, originals)
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "config": self.config.to_dict(),
            "objective": {"name": self.objective.name, "state": self.objective.state_dict()},
            "data": {"num_examples": len(self.train_data), "num_classes": self.train_data.num_classes},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"shuffle": self.shuffle_generator.get_state(),
                    "objective": self.objective_generator.get_state(),
                    "global": _get_global_rng(self.device)},
            "history": self.history,
            "records": None if self.records is None else self.records.to_dict(),
        }

    def load(self, state: dict[str, Any], *, source: str) -> None:
        """Restore a checkpoint after checking it belongs to this run."""
        _check_compatible(state, self, source)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.objective.load_state_dict(state["objective"]["state"])
            self.shuffle_generator.set_state(state["rng"]["shuffle"])
            self.objective_generator.set_state(state["rng"]["objective"])
            _set_global_rng(self.device, state["rng"]["global"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"The checkpoint {source!r} does not fit this model, objective "
                                  f"or optimizer: {reason}") from None
        if self.records is not None:
            self.records = TrainingRecords.from_dict(state["records"], source=repr(source))
        self.history = list(state["history"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])

    def result(self) -> TrainResult:
        accs = [row["val_acc"] for row in self.history if row["val_acc"] is not None]
        return TrainResult(
            model=self.model,
            history=list(self.history),
            records=self.records,
            best_val_acc=max(accs) if accs else None,
            final_val_acc=self.history[-1]["val_acc"] if self.history else None,
            seconds=float(sum(row["seconds"] for row in self.history)),
        )


class _EpochStats:
    """Running sums on the device; read once per epoch so a GPU is not synchronised every step."""

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.n = 0
        self.n_with_logits = 0
        self.metric_sums: dict[str, Any] = {}
        self.metric_counts: dict[str, int] = {}

    def add(self, out: ObjectiveOutput, batch: Batch) -> None:
        size = int(batch.labels.shape[0])
        self.loss_sum += out.loss.detach().float() * size
        self.n += size
        if out.logits is not None:
            self.correct += (out.logits.detach().argmax(dim=1) == batch.labels).sum()
            self.n_with_logits += size
        for key, value in out.metrics.items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
            self.metric_sums[key] = self.metric_sums.get(key, 0.0) + value
            self.metric_counts[key] = self.metric_counts.get(key, 0) + 1

    def summary(self, epoch: int) -> dict[str, Any]:
        loss = float(self.loss_sum) / self.n
        if not math.isfinite(loss):
            raise InvalidParameterError(
                f"Training diverged in epoch {epoch + 1}: the training loss is {loss}. "
                "Lower the 'lr' parameter or set 'grad_clip_norm'.")
        acc = float(self.correct) / self.n_with_logits if self.n_with_logits else None
        metrics = {k: float(v) / self.metric_counts[k] for k, v in self.metric_sums.items()}
        return {"train_loss": loss, "train_acc": acc, "metrics": metrics}


# ---------------------------------------------------------------------- checks
def _check_data(train: Any, val: Any) -> None:
    if not isinstance(train, Dataset):
        fail("train", "a robustlab.data.Dataset", train, error=InvalidTypeError)
    if len(train) == 0:
        fail("train", "a non-empty Dataset", f"the empty dataset {train.name!r}", describe_got=False)
    if train.num_classes < 2:
        fail("train", "a Dataset with at least 2 classes", f"{train.num_classes} class(es)",
             describe_got=False)
    if val is None:
        return
    if not isinstance(val, Dataset):
        fail("val", "None or a robustlab.data.Dataset", val, error=InvalidTypeError)
    if len(val) == 0:
        fail("val", "None or a non-empty Dataset", f"the empty dataset {val.name!r}", describe_got=False)
    if val.num_classes != train.num_classes or val.input_shape != train.input_shape:
        fail("val", f"a Dataset like 'train' ({train.num_classes} classes, inputs {train.input_shape})",
             f"{val.num_classes} classes, inputs {val.input_shape}", describe_got=False)


def _check_output(out: Any, batch: Batch, name: str, num_classes: int, *, need_logits: bool) -> None:
    if not isinstance(out, ObjectiveOutput):
        raise InvalidTypeError(f"The objective {name!r} must return an ObjectiveOutput from compute(). "
                               f"Got {describe(out)} instead.")
    loss = out.loss
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0 or not loss.requires_grad:
        raise InvalidTypeError(f"The objective {name!r} must return a scalar loss tensor that depends on "
                               f"trainable parameters. Got {describe(loss)} instead.")
    if out.logits is not None:
        check_logits(f"logits of objective {name!r}", out.logits, n=batch.labels.shape[0],
                     num_classes=num_classes)
    elif need_logits:
        fail("record_examples", f"False for the objective {name!r}, which returns no logits", True)


def _check_compatible(state: dict[str, Any], run: _Run, source: str) -> None:
    missing = [k for k in _CHECKPOINT_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"The checkpoint {source!r} is incomplete: it lacks {', '.join(missing)}.")
    saved = state["config"]
    if not isinstance(saved, dict):
        raise CheckpointError(f"The checkpoint {source!r} holds no valid config.")
    changed = run.config.differences(saved)
    if changed:
        diffs = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {run.config.to_dict()[k]!r}" for k in changed)
        raise CheckpointError(f"Cannot resume from {source!r} with a different config ({diffs}). "
                              "Use the same config, or a new run_dir to start a new run.")
    name = state["objective"].get("name") if isinstance(state["objective"], dict) else None
    if name != run.objective.name:
        raise CheckpointError(f"Cannot resume from {source!r}: it was trained with the objective "
                              f"{name!r}, not {run.objective.name!r}.")
    data = {"num_examples": len(run.train_data), "num_classes": run.train_data.num_classes}
    if state["data"] != data:
        raise CheckpointError(f"Cannot resume from {source!r}: it was trained on data with {state['data']}, "
                              f"not {data}.")


def _checkpoint_path(run_dir: Any, *, resume: bool) -> Path | None:
    if run_dir is None:
        if resume:
            fail("resume", "False when no 'run_dir' is given (resuming reads the run folder)", True)
        return None
    if not isinstance(run_dir, (str, os.PathLike)):
        fail("run_dir", "None or a folder path", run_dir, error=InvalidTypeError)
    path = check_writable_dir("run_dir", run_dir) / TRAIN_CHECKPOINT_FILENAME
    if not resume and path.exists():
        fail("run_dir", "a folder without a training checkpoint (resume=True, or --resume on the "
             "command line, continues that run)", f"{str(run_dir)!r}, which holds {TRAIN_CHECKPOINT_FILENAME}", describe_got=False,
             error=OutputDirError)
    return path


def _resolve_device(model: torch.nn.Module, config: TrainConfig) -> torch.device:
    if config.device is not None:
        return torch.device(config.device)
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _trainable(model: torch.nn.Module, objective: Objective) -> list[Any]:
    params: list[Any] = []
    seen: set[int] = set()
    for p in [*model.parameters(), *objective.extra_parameters()]:
        if isinstance(p, torch.Tensor) and (not p.requires_grad or id(p) in seen):
            continue  # frozen tensors are not trained; a tensor listed twice is trained once
        if isinstance(p, torch.Tensor):
            seen.add(id(p))
        elif not isinstance(p, Mapping):
            fail("extra_parameters", f"tensors or parameter-group dicts from objective {objective.name!r}",
                 p, error=InvalidTypeError)
        params.append(p)
    if not params:
        fail("model", "a model with trainable parameters (requires_grad=True)", "none", describe_got=False)
    return params


# ---------------------------------------------------------------------- evaluation and logging
def _evaluate(model: torch.nn.Module, val: Dataset, device: torch.device) -> dict[str, float]:
    """Cross entropy and accuracy in eval mode (predict_logits restores the training mode)."""
    logits = predict_logits(model, val, device=device)
    labels = val.labels
    return {"val_loss": float(F.cross_entropy(logits, labels)),
            "val_acc": float((logits.argmax(dim=1) == labels).float().mean())}


def _extra_val_metrics(fn: Callable[[torch.nn.Module, Dataset], Mapping[str, float]],
                       model: torch.nn.Module, val: Dataset | None, evaluate: bool) -> dict[str, float | None]:
    """``val_<name>`` entries of a history row; ``fn`` runs only on evaluation epochs."""
    if not evaluate or val is None:
        return {}
    values = fn(model, val)
    if not isinstance(values, Mapping):
        fail("val_metrics", "a callable returning a dict of floats", values, error=InvalidTypeError)
    return {f"val_{k}": float(v) for k, v in values.items()}


def _stop_requested(objective: Objective) -> bool:
    should_stop = getattr(objective, "should_stop", None)
    return bool(should_stop()) if callable(should_stop) else False


def _log_epoch(row: dict[str, Any], epochs: int) -> None:
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    logger.info("epoch %d/%d train_loss=%s train_acc=%s val_loss=%s val_acc=%s lr=%.4g (%.1fs)",
                row["epoch"] + 1, epochs, fmt(row["train_loss"]), fmt(row["train_acc"]),
                fmt(row["val_loss"]), fmt(row["val_acc"]), row["lr"], row["seconds"])


# ---------------------------------------------------------------------- randomness
def _stream_seed(seed: int, stream: int) -> int:
    """Seed of an independent stream derived from ``seed`` (NumPy SeedSequence spawning)."""
    state = np.random.SeedSequence(seed, spawn_key=(stream,)).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))  # 63 bits: a valid non-negative manual_seed everywhere


def _generator(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(_stream_seed(seed, stream))


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


@contextmanager
def _isolated_global_rng(device: torch.device) -> Iterator[None]:
    """Fork torch's global RNG (CPU, plus the CUDA training device) so seeding it is invisible."""
    devices = [_cuda_index(device)] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        yield


def _seed_global_rng(device: torch.device, seed: int) -> None:
    # Not torch.manual_seed: that would also seed CUDA devices outside the fork.
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(_cuda_index(device)):
            torch.cuda.manual_seed(seed)


def _get_global_rng(device: torch.device) -> dict[str, torch.Tensor | None]:
    accel = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"cpu": torch.get_rng_state(), "device": accel}


def _set_global_rng(device: torch.device, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state.get("device") is not None:
        torch.cuda.set_rng_state(state["device"], device)
