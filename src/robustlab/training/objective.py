"""The Objective protocol: what a training method computes for one batch.

The :class:`~robustlab.training.Trainer` knows nothing about noise. A training method (plain cross
entropy, a robust loss, ELR, co-teaching, TRADES, ...) is an *objective*: it computes the loss for
a batch and may keep state of its own. New methods are added by writing an objective and
registering it in :data:`OBJECTIVES`; the training loop never changes.

What the Trainer does with an objective, in order::

    objective.setup(model=..., train=..., config=..., device=..., generator=...)
    params = trainable model parameters + objective.extra_parameters()    # one optimizer
    [resume: objective.load_state_dict(checkpoint["objective"])]
    for epoch in range(start, epochs):
        objective.on_epoch_start(epoch)
        for batch in train (shuffled):
            out = objective.compute(model, batch, epoch=epoch, step=step)
            out.loss.backward(); [clip]; optimizer.step(); scheduler.step()
            objective.on_step_end(epoch=epoch, step=step)
        objective.on_epoch_end(epoch)
        checkpoint <- objective.state_dict()

How the methods on the roadmap fit:

* **ELR** allocates its ``(N, K)`` target buffer in ``setup`` (``len(train)``, ``train.num_classes``),
  updates it in ``compute`` using ``batch.indices``, and saves it in ``state_dict``.
* **Co-teaching** builds its second network in ``setup``, returns its parameters from
  ``extra_parameters`` (so the one optimizer updates both) and saves its weights in ``state_dict``.
* **TRADES / PGD-AT** build an attack in ``setup`` and draw random starts from the ``generator``.
* **Forward/backward correction** returns a learnable transition matrix from ``extra_parameters``
  (optionally as a parameter-group dict with its own ``weight_decay``).
* **Mean teacher / ELR+ weight averaging** update their EMA copy in ``on_step_end``.
* **DivideMix-style** methods keep ``train`` from ``setup`` and run their per-epoch pass over it
  in ``on_epoch_start``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Union, runtime_checkable

import torch
import torch.nn.functional as F

from robustlab._checks import check_probability, fail
from robustlab._registry import Registry
from robustlab.data.dataset import Batch, Dataset

if TYPE_CHECKING:
    from robustlab.training.config import TrainConfig

__all__ = [
    "ObjectiveOutput",
    "Objective",
    "BaseObjective",
    "CrossEntropy",
    "OBJECTIVES",
    "build_objective",
    "ParamSpec",
    "BUILTIN_METHOD_MODULES",
]

#: Modules that register built-in objectives; imported on the first read of :data:`OBJECTIVES`
#: (so ``build_objective("gce")`` works without importing them first, and nothing runs at import).
BUILTIN_METHOD_MODULES: tuple[str, ...] = ("robustlab.label_noise.objectives", "robustlab.label_noise.selection",
                                             "robustlab.label_noise.dividemix",
                                             "robustlab.corruptions.augment",
                                             "robustlab.adversarial.training",
                                             "robustlab.certified.training",
                                             "robustlab.calibration.training")

#: What :meth:`Objective.extra_parameters` may yield: a tensor to optimise, or a torch
#: parameter-group dict (``{"params": [...], "weight_decay": 0.0, ...}``) for its own settings.
ParamSpec = Union[torch.Tensor, Mapping[str, Any]]


@dataclass(frozen=True, eq=False)
class ObjectiveOutput:
    """What an objective returns for one batch.

    Attributes
    ----------
    loss : Tensor, shape ()
        Scalar to minimise; the Trainer calls ``loss.backward()`` on it.
    logits : Tensor of shape (N, K), optional
        The model's logits on the *clean* batch inputs, in the batch's order. The Trainer only
        reads them (detached) for the training accuracy and the per-example records; ``None`` when
        the method never computes them (then ``train_acc`` is ``None`` and ``record_examples``
        cannot be used).
    metrics : mapping of str to float or 0-d Tensor, default {}
        Extra numbers to log (e.g. the fraction of examples kept by co-teaching). The Trainer
        averages each over the epoch's steps and stores them in ``history[e]["metrics"]``. 0-d
        tensors are accepted so that no GPU synchronisation is needed per step.
    """

    loss: torch.Tensor
    logits: torch.Tensor | None = None
    metrics: Mapping[str, float | torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class Objective(Protocol):
    """A training method: computes the loss of a batch, may hold state.

    Subclass :class:`BaseObjective` rather than implementing every method by hand.

    Attributes
    ----------
    name : str
        Registered name (``"ce"``, ``"elr"``, ...); stored in checkpoints so a run cannot be
        resumed with a different method.
    """

    name: str

    def setup(
        self,
        *,
        model: torch.nn.Module,
        train: Dataset,
        config: TrainConfig,
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        """Prepare for a run; called once per :meth:`Trainer.fit`, before the optimizer is built.

        Parameters
        ----------
        model : nn.Module
            The model being trained, already on ``device``.
        train : Dataset
            The training data: ``len(train)`` examples, ``train.num_classes`` classes; indices in
            ``Batch.indices`` refer to it.
        config : TrainConfig
            The run's settings (``epochs``, ``batch_size``, ...).
        device : torch.device
            Where batches and the model live; state tensors should be created here.
        generator : torch.Generator
            A CPU generator reserved for the objective's own randomness (random starts, sample
            selection, network initialisation). Its state is saved in every checkpoint, so
            drawing from it keeps resume exact. Sample on CPU and move, or seed a device
            generator from it.
        """
        ...

    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        """Loss of one batch (inputs and labels already on the device, model in train mode).

        ``epoch`` is 0-based; ``step`` counts optimizer steps since the start of the run, 0-based.
        """
        ...

    def on_epoch_start(self, epoch: int) -> None:
        """Called before the first batch of ``epoch`` (0-based)."""
        ...

    def on_epoch_end(self, epoch: int) -> None:
        """Called after the last batch of ``epoch``, before validation and the checkpoint."""
        ...

    def on_step_end(self, *, epoch: int, step: int) -> None:
        """Called after each optimizer step (e.g. to update an exponential moving average)."""
        ...

    def extra_parameters(self) -> Iterable[ParamSpec]:
        """Trainable tensors besides the model's (a second network, a transition matrix).

        Called once after :meth:`setup`; they join the one optimizer (same learning rate and
        schedule unless given as a parameter-group dict) and gradient clipping. The Trainer
        checkpoints the optimizer's state for them but not their values: include those in
        :meth:`state_dict`, and have :meth:`load_state_dict` copy them *in place* (the optimizer
        holds these very tensors).
        """
        ...

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint: tensors, numbers, strings, bools, None, lists and dicts only
        (checkpoints are read with ``torch.load(weights_only=True)``)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; called after :meth:`setup` on resume."""
        ...


class BaseObjective(ABC):
    """Convenience base for objectives: every hook is a no-op, state is empty.

    Subclasses set ``name`` and implement :meth:`compute`; they override the other hooks only
    when they keep state. ``__init__`` should only store settings (the work happens in
    :meth:`setup`), so one instance can be built from a config and reused across runs —
    :meth:`setup` resets the state at the start of every :meth:`Trainer.fit`.
    """

    name: ClassVar[str] = "objective"

    def setup(
        self,
        *,
        model: torch.nn.Module,
        train: Dataset,
        config: TrainConfig,
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        return None

    @abstractmethod
    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        """Loss of one batch; see :meth:`Objective.compute`."""

    def on_epoch_start(self, epoch: int) -> None:
        return None

    def on_epoch_end(self, epoch: int) -> None:
        return None

    def on_step_end(self, *, epoch: int, step: int) -> None:
        return None

    def extra_parameters(self) -> Iterable[ParamSpec]:
        return ()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None

    def epoch_metrics(self) -> Mapping[str, float]:
        """Numbers measured once per epoch (in :meth:`on_epoch_end`) to store in the history.

        Optional hook (not part of :class:`Objective`; the Trainer calls it when present): read
        after :meth:`on_epoch_end` and merged into ``history[e]["metrics"]`` next to the epoch
        means of the per-step metrics. Default: none.
        """
        return {}

    def should_stop(self) -> bool:
        """Whether training should end after the current epoch (e.g. a detected failure).

        Optional hook (not part of :class:`Objective`; the Trainer calls it when present): read
        after each epoch's history row and checkpoint are written; when True the Trainer ends the
        run early (the checkpoint is written first, so the decision survives a resume as long as
        :meth:`state_dict` keeps it). Default: never.
        """
        return False

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in _init_params(self).items())
        return f"{type(self).__name__}({params})"


def _init_params(obj: object) -> dict[str, Any]:
    names = [p for p in inspect.signature(type(obj).__init__).parameters if p != "self"]
    return {n: getattr(obj, n) for n in names if hasattr(obj, n)}


#: Registered training objectives by name; ``--method NAME`` on the command line. Built-in
#: methods living outside this module (robust losses, ...) are listed in
#: :data:`BUILTIN_METHOD_MODULES` and imported on first lookup.
OBJECTIVES: Registry[type[BaseObjective]] = Registry("method", builtin_modules=lambda: BUILTIN_METHOD_MODULES)


@OBJECTIVES.register("ce")
class CrossEntropy(BaseObjective):
    """Plain cross entropy on the given labels (the standard, noise-unaware baseline).

    Parameters
    ----------
    label_smoothing : float in [0, 1), default 0.0
        Mixes the one-hot target with the uniform distribution:
        ``target = (1 - label_smoothing) * onehot(y) + label_smoothing / K``
        (Szegedy et al., 2016, Sec. 7), as in :func:`torch.nn.functional.cross_entropy`.

    Notes
    -----
    ``loss = mean_i -sum_k target_ik log softmax(z_i)_k`` over the batch.
    """

    name = "ce"

    def __init__(self, *, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = check_probability("label_smoothing", label_smoothing, allow_one=False)

    def compute(self, model: torch.nn.Module, batch: Batch, *, epoch: int, step: int) -> ObjectiveOutput:
        logits = model(batch.inputs)
        loss = F.cross_entropy(logits, batch.labels, label_smoothing=self.label_smoothing)
        return ObjectiveOutput(loss=loss, logits=logits)


def build_objective(name: str, **params: Any) -> BaseObjective:
    """Build a registered objective by name.

    Parameters
    ----------
    name : str
        One of ``OBJECTIVES.names()``; an unknown name raises
        :class:`~robustlab.errors.UnknownNameError` listing the valid ones.
    **params
        Keyword arguments of that objective; unknown ones raise
        :class:`~robustlab.errors.InvalidParameterError` naming them and listing the accepted ones.

    Examples
    --------
    >>> build_objective("ce", label_smoothing=0.1)
    CrossEntropy(label_smoothing=0.1)
    """
    cls = OBJECTIVES.get(name)
    accepted = _accepted_params(cls)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        valid = ", ".join(repr(a) for a in accepted) or "none"
        fail("params", f"options of the {name!r} objective (accepted: {valid})",
             ", ".join(repr(u) for u in unknown), describe_got=False)
    signature = inspect.signature(cls.__init__)
    for n in accepted:  # a required setting left out: name it, not a TypeError from __init__
        if signature.parameters[n].default is inspect.Parameter.empty and n not in params:
            fail(n, f"given for the {name!r} objective (it has no default)", "nothing", describe_got=False)
    return cls(**params)


def _accepted_params(cls: type) -> list[str]:
    signature = inspect.signature(cls.__init__)
    return [n for n, p in signature.parameters.items()
            if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
