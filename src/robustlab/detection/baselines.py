"""Baseline detectors: maximum softmax probability, energy score, deep k-nearest neighbours.

Score convention (every detector in :mod:`robustlab.detection`): ``score(model, inputs)`` returns
a float tensor ``(N,)`` on the inputs' device where a HIGHER score means MORE in-distribution.
Detectors follow scikit-learn: ``__init__`` stores settings, ``fit`` learns and returns ``self``,
learned attributes end in ``_``.
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab._checks import check_int, check_logits, check_number, fail
from robustlab._constants import (
    ENERGY_TEMPERATURE,
    EVAL_BATCH_SIZE,
    FEATURE_NORM_EPS,
    KNN_K,
    PENULTIMATE,
)
from robustlab._model_state import eval_mode
from robustlab.detection._features import (
    check_batch_inputs,
    check_module,
    forward_features,
    resolve_layers,
)
from robustlab.errors import InvalidTypeError, ModelOutputError, NotFittedError

__all__ = ["KNN", "Energy", "MaxSoftmax", "model_logits"]


@torch.no_grad()
def model_logits(model: Any, inputs: torch.Tensor, *, batch_size: int = EVAL_BATCH_SIZE) -> torch.Tensor:
    """Logits ``(N, K)`` of ``model`` on ``inputs``, batched, in eval mode (caller's mode restored)."""
    if not callable(model):
        fail("model", "a callable returning logits (e.g. a torch.nn.Module)", model, error=InvalidTypeError)
    inputs = check_batch_inputs("inputs", inputs)
    batch_size = check_int("batch_size", batch_size, low=1)
    return _logits_impl(model, inputs, batch_size)


def _logits_impl(model: Any, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    def run() -> torch.Tensor:
        out = [model(inputs[i:i + batch_size]) for i in range(0, inputs.shape[0], batch_size)]
        for chunk in out:
            check_logits("model output", chunk)
        logits = torch.cat(out)
        check_logits("model output", logits, n=inputs.shape[0])
        if not bool(torch.isfinite(logits).all()):
            raise ModelOutputError("The 'model output' must be finite logits. Got NaN/inf values instead.")
        return logits

    with torch.no_grad():
        if isinstance(model, torch.nn.Module):
            with eval_mode(model):
                return run()
        return run()


def _check_batch_size(batch_size: Any) -> int:
    return check_int("batch_size", batch_size, low=1)


class MaxSoftmax:
    """Maximum softmax probability (MSP) baseline: ``score(x) = max_k softmax(f(x))_k``.

    Parameters
    ----------
    batch_size : int, default EVAL_BATCH_SIZE
        Inputs per forward pass (memory only; the scores do not depend on it).

    Notes
    -----
    Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution Examples in
    Neural Networks", ICLR 2017, Sec. 2-3. Nothing is learned: :meth:`fit` only checks its
    arguments and returns ``self``; :meth:`score` may be called without it. The score is unchanged
    when a constant is added to every logit (softmax is shift-invariant). ``model`` may be any
    callable returning logits ``(N, K)``.

    References
    ----------
    D. Hendrycks and K. Gimpel. ICLR 2017. arXiv:1610.02136.

    Examples
    --------
    >>> import torch
    >>> det = MaxSoftmax()
    >>> det.score(torch.nn.Identity(), torch.tensor([[0.0, 0.0], [10.0, 0.0]])).round(decimals=3)
    tensor([0.5000, 1.0000])
    """

    def __init__(self, *, batch_size: int = EVAL_BATCH_SIZE) -> None:
        self.batch_size = batch_size

    def fit(self, model: Any = None, inputs: Any = None, labels: Any = None) -> MaxSoftmax:
        """Nothing to learn; returns ``self`` (arguments are accepted for a uniform API)."""
        _check_batch_size(self.batch_size)
        return self

    def score(self, model: Any, inputs: Any) -> torch.Tensor:
        """Maximum softmax probability per input, float ``(N,)``; higher = more in-distribution."""
        logits = model_logits(model, inputs, batch_size=_check_batch_size(self.batch_size))
        return logits.softmax(dim=1).amax(dim=1)


class Energy:
    """Energy score: ``score(x) = -E(x; f) = T * logsumexp(f(x) / T)``.

    Parameters
    ----------
    temperature : float > 0, default ENERGY_TEMPERATURE (1.0)
        ``T`` in Liu et al. (2020), Eq. 5; the paper uses ``T = 1`` (Sec. 3).
    batch_size : int, default EVAL_BATCH_SIZE

    Notes
    -----
    Liu, Wang, Owens & Li, "Energy-based Out-of-distribution Detection", NeurIPS 2020, Eq. 5:
    :math:`E(x; f) = -T \\log \\sum_k e^{f_k(x)/T}`; the score is the negative energy, so higher
    means more in-distribution. Properties (tested): ``max_k f_k <= score <= max_k f_k + T log K``,
    so the score tends to the maximum logit as ``T -> 0``; adding ``c`` to every logit adds ``c``
    to the score (the ranking, hence every metric, of a fixed model is unchanged). Nothing is
    learned; :meth:`fit` returns ``self``.

    References
    ----------
    W. Liu, X. Wang, J. Owens, Y. Li. NeurIPS 2020. arXiv:2010.03759.
    """

    def __init__(self, *, temperature: float = ENERGY_TEMPERATURE,
                 batch_size: int = EVAL_BATCH_SIZE) -> None:
        self.temperature = temperature
        self.batch_size = batch_size

    def _check(self) -> tuple[float, int]:
        t = check_number("temperature", self.temperature, low=0.0, low_inclusive=False)
        return t, _check_batch_size(self.batch_size)

    def fit(self, model: Any = None, inputs: Any = None, labels: Any = None) -> Energy:
        """Nothing to learn; returns ``self``."""
        self._check()
        return self

    def score(self, model: Any, inputs: Any) -> torch.Tensor:
        """Negative energy per input, float ``(N,)``; higher = more in-distribution."""
        t, bs = self._check()
        logits = model_logits(model, inputs, batch_size=bs)
        return t * torch.logsumexp(logits / t, dim=1)


class KNN:
    """Deep nearest-neighbour detector on L2-normalised penultimate features.

    Parameters
    ----------
    k : int >= 1, default KNN_K (50)
        Which nearest neighbour's distance is the score (Sun et al. 2022, Sec. 4.1: ``k = 50`` on
        CIFAR-10 with the whole training set; they use ``k = 1000`` with 1% of ImageNet).
    layer : str, default "penultimate"
        Module name (``model.named_modules()``) whose output is the feature, or ``"penultimate"``:
        the input of the model's last ``nn.Linear``. Feature maps are average-pooled per channel.
    batch_size : int, default EVAL_BATCH_SIZE

    Attributes
    ----------
    bank_ : Tensor (M, F)
        L2-normalised features of the ``fit`` inputs.

    Notes
    -----
    Sun, Ming, Zhu & Li, "Out-of-Distribution Detection with Deep Nearest Neighbors", ICML 2022,
    Sec. 3 (Algorithm 1): with :math:`z^* = z / \\|z\\|_2`, the score is
    :math:`-\\|z^*(x) - z^*_{(k)}\\|_2`, minus the distance to the k-th nearest normalised training
    feature. Exact search (``torch.cdist`` + ``topk``) instead of the paper's Faiss index.

    References
    ----------
    Y. Sun, Y. Ming, X. Zhu, Y. Li. ICML 2022. arXiv:2204.06507.
    """

    def __init__(self, *, k: int = KNN_K, layer: str = PENULTIMATE,
                 batch_size: int = EVAL_BATCH_SIZE) -> None:
        self.k = k
        self.layer = layer
        self.batch_size = batch_size

    def fit(self, model: Any, inputs: Any, labels: Any = None) -> KNN:
        """Store the normalised features of ``inputs`` (in-distribution training data); labels unused."""
        k = check_int("k", self.k, low=1)
        bs = _check_batch_size(self.batch_size)
        model = check_module("model", model)
        inputs = check_batch_inputs("inputs", inputs)
        if inputs.shape[0] < k:
            fail("k", f"at most the number of fit inputs ({inputs.shape[0]})", k)
        resolved = resolve_layers(model, [self.layer])
        self.bank_ = self._features(model, inputs, resolved, bs)
        return self

    @staticmethod
    def _features(model, inputs, resolved, bs) -> torch.Tensor:
        with torch.no_grad(), eval_mode(model):
            parts = [forward_features(model, inputs[i:i + bs], resolved)[1][0]
                     for i in range(0, inputs.shape[0], bs)]
        z = torch.cat(parts)
        return z / z.norm(dim=1, keepdim=True).clamp_min(FEATURE_NORM_EPS)

    def score(self, model: Any, inputs: Any) -> torch.Tensor:
        """Minus the distance to the k-th nearest training feature, ``(N,)``; higher = more in."""
        if not hasattr(self, "bank_"):
            raise NotFittedError("This KNN detector is not fitted yet. Call 'fit' before 'score'.")
        k = check_int("k", self.k, low=1)
        bs = _check_batch_size(self.batch_size)
        model = check_module("model", model)
        inputs = check_batch_inputs("inputs", inputs)
        resolved = resolve_layers(model, [self.layer])
        z = self._features(model, inputs, resolved, bs)
        bank = self.bank_.to(device=z.device, dtype=z.dtype)
        if bank.shape[1] != z.shape[1]:
            fail("model", f"the model used in fit (features of size {bank.shape[1]})",
                 f"features of size {z.shape[1]}", describe_got=False)
        out = []
        for i in range(0, z.shape[0], bs):
            d = torch.cdist(z[i:i + bs], bank)
            out.append(-d.topk(k, dim=1, largest=False).values[:, -1])
        return torch.cat(out)
