"""Per-example training records: loss, margin and correctness of every example at every epoch.

They are what training-dynamics label audits read: the area under the margin (AUM, Pleiss et al.,
2020) and forgetting events (Toneva et al., 2019).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from robustlab._checks import check_int, fail
from robustlab.errors import CheckpointError

__all__ = ["TrainingRecords", "margins"]


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Margin of each example: logit of its given label minus the largest other logit.

    ``margin_i = z_{i, y_i} - max_{k != y_i} z_{i, k}`` (Pleiss et al., 2020, Eq. 1). Positive iff
    the given label has the strictly largest logit. Shape ``(N,)``, same dtype as ``logits``.
    """
    given = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return given - others.amax(dim=1)


@dataclass(frozen=True, eq=False)
class TrainingRecords:
    """Loss, margin and correctness of every training example at every epoch.

    Recorded by the :class:`~robustlab.training.Trainer` when ``record_examples=True``, from the
    forward pass of the training step itself (model in train mode, before that step's update),
    as AUM does — no extra pass over the data. Column ``i`` is the example with index ``i`` in
    the training :class:`~robustlab.data.Dataset` (``Batch.indices``).

    Attributes
    ----------
    loss : Tensor, float32, shape (epochs, N)
        Cross entropy of the recorded logits with the given label,
        ``-log softmax(z_i)_{y_i}``, whatever the objective (so records of runs with different
        methods compare).
    margin : Tensor, float32, shape (epochs, N)
        ``z_{i, y_i} - max_{k != y_i} z_{i, k}`` (see :func:`margins`).
    correct : Tensor, bool, shape (epochs, N)
        ``argmax_k z_{i, k} == y_i`` (ties go to the lowest class index, as in ``torch.argmax``).

    ``z`` are the logits the objective returned for the clean inputs (``ObjectiveOutput.logits``)
    and ``y`` the labels in the dataset (possibly noisy). Rows of epochs not run yet hold NaN
    (``loss``, ``margin``) and False (``correct``).
    """

    loss: torch.Tensor
    margin: torch.Tensor
    correct: torch.Tensor

    @classmethod
    def empty(cls, epochs: int, num_examples: int) -> TrainingRecords:
        """Records of ``epochs`` x ``num_examples`` filled with NaN / False."""
        check_int("epochs", epochs, low=1)
        check_int("num_examples", num_examples, low=1)
        nan = torch.full((epochs, num_examples), float("nan"))
        return cls(loss=nan, margin=nan.clone(),
                   correct=torch.zeros(epochs, num_examples, dtype=torch.bool))

    @property
    def num_epochs(self) -> int:
        return int(self.loss.shape[0])

    @property
    def num_examples(self) -> int:
        return int(self.loss.shape[1])

    def aum(self, *, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Area under the margin: the mean margin over epochs ``[start, end)``, shape ``(N,)``.

        ``AUM_i = (1 / T) sum_t margin_{t, i}`` (Pleiss et al., 2020, Eq. 2). Low or negative
        values flag likely mislabelled examples. Epochs not yet run (NaN) are an error.
        """
        rows = self._rows(start, end)
        if bool(torch.isnan(rows).any()):
            fail("end", "an epoch range that has been trained", f"[{start}, {end})", describe_got=False)
        return rows.mean(dim=0)

    def forgetting_events(self, *, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Number of forgetting events per example in epochs ``[start, end)``, int64 ``(N,)``.

        A forgetting event is a transition from correct at epoch ``t - 1`` to incorrect at
        epoch ``t`` (Toneva et al., 2019, Sec. 3). Examples never classified correctly have 0
        events here; find them with ``~records.correct.any(dim=0)`` (the paper counts them as
        forgotten infinitely often).
        """
        self._rows(start, end)
        c = self.correct[start:end]
        return (c[:-1] & ~c[1:]).sum(dim=0).to(torch.int64)

    def _rows(self, start: int, end: int | None) -> torch.Tensor:
        check_int("start", start, low=0, high=self.num_epochs - 1)
        if end is not None:
            check_int("end", end, low=start + 1, high=self.num_epochs)
        return self.margin[start:end]

    def truncated(self, epochs: int) -> TrainingRecords:
        """The first ``epochs`` rows."""
        check_int("epochs", epochs, low=0, high=self.num_epochs)
        return TrainingRecords(self.loss[:epochs].clone(), self.margin[:epochs].clone(),
                               self.correct[:epochs].clone())

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {"loss": self.loss, "margin": self.margin, "correct": self.correct}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any], *, source: str = "records") -> TrainingRecords:
        """Rebuild from :meth:`to_dict`; a malformed state raises :class:`CheckpointError` naming ``source``."""
        try:
            loss, margin, correct = state["loss"], state["margin"], state["correct"]
        except (KeyError, TypeError):
            raise CheckpointError(f"{source} holds malformed training records.") from None
        tensors = (loss, margin, correct)
        if not all(isinstance(t, torch.Tensor) and t.ndim == 2 and t.shape == loss.shape for t in tensors) \
                or correct.dtype != torch.bool:
            raise CheckpointError(f"{source} holds malformed training records.")
        return cls(loss=loss.float(), margin=margin.float(), correct=correct)


class EpochRecorder:
    """Collects one epoch of records on the training device; copied to CPU once per epoch.

    Keeping the buffers on the device avoids a host synchronisation per step on a GPU.
    """

    def __init__(self, num_examples: int, device: torch.device) -> None:
        self.loss = torch.full((num_examples,), float("nan"), device=device)
        self.margin = torch.full((num_examples,), float("nan"), device=device)
        self.correct = torch.zeros(num_examples, dtype=torch.bool, device=device)

    def add(self, indices: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Statistics of ``logits`` ``(B, K)`` for the dataset examples ``indices`` ``(B,)``."""
        z = logits.detach().float()
        idx = indices.to(z.device)
        self.loss[idx] = F.cross_entropy(z, labels, reduction="none")
        self.margin[idx] = margins(z, labels)
        self.correct[idx] = z.argmax(dim=1) == labels

    def write(self, records: TrainingRecords, epoch: int) -> None:
        """Copy this epoch into row ``epoch`` of ``records`` (filled in place)."""
        records.loss[epoch] = self.loss.cpu()
        records.margin[epoch] = self.margin.cpu()
        records.correct[epoch] = self.correct.cpu()
