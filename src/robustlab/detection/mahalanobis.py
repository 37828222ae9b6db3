"""Mahalanobis detector (Lee, Lee, Lee & Shin, NeurIPS 2018): class-conditional Gaussians with a
tied covariance on chosen layers' features, input pre-processing and a layer ensemble.

Score convention as everywhere in :mod:`robustlab.detection`: higher = more in-distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from robustlab._checks import check_int, check_labels, check_number, fail
from robustlab._constants import (
    EVAL_BATCH_SIZE,
    MAHALANOBIS_AUTO,
    MAHALANOBIS_AUTO_MAX_LAYERS,
    MAHALANOBIS_AUTO_PROBE_INPUTS,
    MAHALANOBIS_EPS,
    MAHALANOBIS_EPS_GRID,
    MAHALANOBIS_MIN_HALF,
    PENULTIMATE,
)
from robustlab._model_state import frozen_params
from robustlab.detection._features import (
    auto_layers,
    check_batch_inputs,
    check_module,
    forward_features,
    resolve_layers,
)
from robustlab.errors import InvalidParameterError, InvalidTypeError, NotFittedError

__all__ = ["Mahalanobis"]


def _distances(f: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distances ``(N, K)``: ``(f - mu_c)^T P (f - mu_c)``, in float64."""
    f = f.to(torch.float64)
    fp = f @ precision
    mp = means @ precision
    # expanded form: no (N, K, F) difference tensor; float64 keeps the cancellation harmless
    d = (fp * f).sum(1, keepdim=True) - 2 * fp @ means.T + (mp * means).sum(1)[None, :]
    return d.clamp_min(0.0)


class Mahalanobis:
    """Mahalanobis-distance confidence score with input pre-processing and a layer ensemble.

    Parameters
    ----------
    layers : sequence of str or "auto", default ("penultimate",)
        Module names (``model.named_modules()``) whose outputs are the features, or
        ``"penultimate"``: the input of the model's last ``nn.Linear``. Feature maps
        ``(N, C, H, W)`` are average-pooled per channel to ``(N, C)`` (Lee et al., Sec. 2.2).
        ``"auto"``: the ends of the model's blocks and the penultimate layer, chosen in ``fit``
        by :func:`~robustlab.detection._features.auto_layers` (at most
        ``MAHALANOBIS_AUTO_MAX_LAYERS`` = 4 activation outputs, evenly spaced, plus
        ``"penultimate"``), the paper's layer ensemble without naming layers.
    eps : float >= 0 or "auto", default MAHALANOBIS_EPS (0.0014)
        Pre-processing magnitude. Lee et al. choose it per task on validation data from the grid
        ``MAHALANOBIS_EPS_GRID = (0, 0.01, 0.005, 0.002, 0.0014, 0.001, 0.0005)``
        (deep_Mahalanobis_detector OOD_Generate_Mahalanobis.py ``m_list``); the default is the grid
        member ODIN also uses. ``eps=0`` switches pre-processing off (exactly). ``"auto"`` does
        the paper's selection in ``fit`` (it needs ``val_in`` and ``val_out``): for each grid value
        the logistic ensemble is fit on the first half of each validation set and scored on the
        second half; the value with the lowest FPR at 95% TPR there wins (ties: higher AUROC, then
        the smaller eps), as the reference picks the best TNR at TPR 95% on the held-out part of
        its validation data (deep_Mahalanobis_detector OOD_Regression_Mahalanobis.py: logistic
        regression on 500 + 500 validation inputs, selection on the rest; ADV_Regression.py
        selects by AUROC instead). Unlike the reference, the ensemble is then refit on all
        validation inputs at the chosen eps.
    batch_size : int >= 1, default EVAL_BATCH_SIZE
        Inputs per forward pass (memory only).

    Attributes
    ----------
    layers_ : tuple of str
        The layers used (``layers``, or the ones ``"auto"`` chose).
    eps_ : float
        The pre-processing magnitude used (``eps``, or the one ``"auto"`` chose).
    classes_ : Tensor (K,), int64
        Class labels seen in ``fit`` (one Gaussian each).
    means_ : list of Tensor (K, F_l), float64
        Class means per layer, Eq. 1 of the paper.
    covariance_ : list of Tensor (F_l, F_l), float64
        Tied (pooled) covariance per layer: ``(1/N) sum_c sum_{i: y_i = c} (f_i - mu_c)(f_i - mu_c)^T``.
    precision_ : list of Tensor (F_l, F_l), float64
        Pseudo-inverse of ``covariance_`` (as sklearn's ``EmpiricalCovariance``, which the reference
        code uses).
    combiner_ : sklearn Pipeline or None
        StandardScaler + LogisticRegression on the per-layer scores, when validation in/out inputs
        were given to ``fit``; ``None`` means the ensemble is the plain mean over layers.

    Notes
    -----
    Per layer :math:`\\ell` with features :math:`f_\\ell(x)`, Lee et al. (2018) Eq. 2:
    :math:`M_\\ell(x) = \\max_c -(f_\\ell(x) - \\hat\\mu_{\\ell,c})^T \\hat\\Sigma_\\ell^{-1}
    (f_\\ell(x) - \\hat\\mu_{\\ell,c})`. Pre-processing (Algorithm 1; Eq. 4):
    :math:`\\hat x = x + \\epsilon\\, \\mathrm{sign}(\\nabla_x M_\\ell(x))`, i.e. a step of size eps
    against the gradient of the distance to the closest class :math:`\\hat c`, done separately for
    each layer; the layer's score is :math:`M_\\ell(\\hat x)`. The ensemble is
    :math:`\\sum_\\ell \\alpha_\\ell M_\\ell` with weights from a logistic regression on
    validation in (label 1) and out (label 0) scores (Sec. 2.2); :meth:`score` returns its
    decision function (log-odds of "in"). Without validation data the layers' scores are averaged.

    Deviations from the reference code (pokaxpoka/deep_Mahalanobis_detector lib_generation.py):
    the distance has no factor ``-0.5`` (the paper's Eq. 2; the ranking is the same); the step is
    taken on the model's raw inputs (robustlab models normalise inside, so the reference's division
    of the gradient by the normalisation std does not apply: our eps is in input units); the sign
    of a zero gradient component is 0 (the reference maps it to +1); no clamping to [0, 1]
    (neither does the reference); the per-layer scores are standardised before the logistic
    regression (plain ``LogisticRegression``, not ``LogisticRegressionCV``) for the solver's sake.

    References
    ----------
    K. Lee, K. Lee, H. Lee, J. Shin. A Simple Unified Framework for Detecting Out-of-Distribution
    Samples and Adversarial Attacks. NeurIPS 2018. arXiv:1807.03888.
    """

    def __init__(self, *, layers: Sequence[str] = (PENULTIMATE,), eps: float = MAHALANOBIS_EPS,
                 batch_size: int = EVAL_BATCH_SIZE) -> None:
        self.layers = layers
        self.eps = eps
        self.batch_size = batch_size

    # ------------------------------------------------------------------------------ validation
    def _check_settings(self) -> tuple[tuple[str, ...] | str, float | str, int]:
        """``(layers, eps, batch_size)``; ``layers`` and ``eps`` may be ``"auto"``."""
        layers = self.layers
        if isinstance(layers, str) and layers == MAHALANOBIS_AUTO:
            pass
        elif isinstance(layers, str) or not isinstance(layers, Sequence) or not layers \
                or not all(isinstance(n, str) for n in layers):
            fail("layers", "a non-empty sequence of module names or 'auto'", layers,
                 error=InvalidTypeError)
        elif len(set(layers)) != len(layers):
            fail("layers", "a sequence of distinct module names", layers)
        else:
            layers = tuple(layers)
        eps = self.eps
        if not (isinstance(eps, str) and eps == MAHALANOBIS_AUTO):
            eps = check_number("eps", eps, low=0.0)
        return layers, eps, check_int("batch_size", self.batch_size, low=1)

    def _check_fitted(self) -> None:
        if not hasattr(self, "precision_"):
            raise NotFittedError("This Mahalanobis detector is not fitted yet. Call 'fit' before 'score'.")

    # ------------------------------------------------------------------------------ fit
    def fit(self, model: Any, inputs: Any, labels: Any, *, val_in: Any = None,
            val_out: Any = None) -> Mahalanobis:
        """Estimate class means and the tied covariance per layer; fit the ensemble weights.

        Parameters
        ----------
        model : torch.nn.Module
            The classifier (its train/eval mode and ``requires_grad`` flags are restored).
        inputs : Tensor (N, ...)
            In-distribution training inputs.
        labels : Tensor (N,), int
            Their labels (ground truth, as in the paper).
        val_in, val_out : Tensor (N_in, ...) and (N_out, ...), optional
            Validation in- and out-of-distribution inputs (e.g. clean and adversarial/OOD
            examples) on which the logistic-regression ensemble is fit (and ``eps="auto"``
            chooses the pre-processing magnitude). Both or neither.
        """
        layers, eps, bs = self._check_settings()
        model = check_module("model", model)
        inputs = check_batch_inputs("inputs", inputs)
        labels = check_labels("labels", labels, n=inputs.shape[0]).to(inputs.device)
        if (val_in is None) != (val_out is None):
            fail("val_out" if val_out is None else "val_in",
                 "given together with the other validation set (both or neither)", None)
        if eps == MAHALANOBIS_AUTO:
            if val_in is None:
                fail("eps", "a number >= 0 when no validation inputs are given ('auto' chooses it "
                     "on val_in/val_out)", "'auto'", describe_got=False)
            for name, v in (("val_in", val_in), ("val_out", val_out)):
                if check_batch_inputs(name, v).shape[0] < 2 * MAHALANOBIS_MIN_HALF:
                    fail(name, f"at least {2 * MAHALANOBIS_MIN_HALF} inputs when eps='auto' (half "
                         "fit the ensemble, half choose eps)", v)
        if layers == MAHALANOBIS_AUTO:
            layers = auto_layers(model, inputs[:MAHALANOBIS_AUTO_PROBE_INPUTS],
                                 max_layers=MAHALANOBIS_AUTO_MAX_LAYERS)
        resolved = resolve_layers(model, layers)
        classes, y = torch.unique(labels, return_inverse=True)
        num_classes = classes.numel()
        sums: list[torch.Tensor] = []
        outer: list[torch.Tensor] = []
        counts = torch.bincount(y, minlength=num_classes).to(torch.float64)
        with torch.no_grad(), frozen_params(model):
            for i in range(0, inputs.shape[0], bs):
                _, feats = forward_features(model, inputs[i:i + bs], resolved)
                for j, f in enumerate(feats):
                    f = f.to(torch.float64)
                    if len(sums) <= j:
                        sums.append(torch.zeros(num_classes, f.shape[1], dtype=torch.float64, device=f.device))
                        outer.append(torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64, device=f.device))
                    sums[j].index_add_(0, y[i:i + bs].to(f.device), f)
                    outer[j] += f.T @ f
        n = float(inputs.shape[0])
        self.means_, self.covariance_, self.precision_ = [], [], []
        for s, o in zip(sums, outer):
            c = counts.to(s.device)
            mu = s / c[:, None]
            # sum_i f_i f_i^T - sum_c n_c mu_c mu_c^T = sum_c sum_{y_i=c} (f_i - mu_c)(f_i - mu_c)^T
            cov = (o - (mu * c[:, None]).T @ mu) / n
            cov = (cov + cov.T) / 2
            self.means_.append(mu)
            self.covariance_.append(cov)
            self.precision_.append(torch.linalg.pinv(cov, hermitian=True))
        self.layers_ = layers
        self.classes_ = classes
        self.combiner_ = None
        self.eps_ = eps
        if val_in is None:
            return self
        val_in, val_out = check_batch_inputs("val_in", val_in), check_batch_inputs("val_out", val_out)
        if eps == MAHALANOBIS_AUTO:
            self.eps_, self.combiner_ = self._select_eps(model, val_in, val_out)
        else:
            self.combiner_ = _fit_logistic(self._val_scores(model, val_in, eps),
                                           self._val_scores(model, val_out, eps))
        return self

    def _val_scores(self, model: torch.nn.Module, x: torch.Tensor, eps: float) -> np.ndarray:
        resolved = resolve_layers(model, self.layers_)
        bs = check_int("batch_size", self.batch_size, low=1)
        out = [self._batch_scores(model, x[i:i + bs], resolved, eps) for i in range(0, x.shape[0], bs)]
        # the dtype of layer_scores (what score() feeds the fitted ensemble)
        return torch.cat(out).to(x.dtype).detach().cpu().double().numpy()

    def _select_eps(self, model: torch.nn.Module, val_in: torch.Tensor, val_out: torch.Tensor):
        """Lee et al.'s choice of the pre-processing magnitude on validation data (see ``eps``)."""
        from robustlab.detection.metrics import detection_metrics

        h_in, h_out = val_in.shape[0] // 2, val_out.shape[0] // 2
        best = None
        for e in sorted(MAHALANOBIS_EPS_GRID):
            s_in, s_out = self._val_scores(model, val_in, e), self._val_scores(model, val_out, e)
            comb = _fit_logistic(s_in[:h_in], s_out[:h_out])
            m = detection_metrics(comb.decision_function(s_in[h_in:]), comb.decision_function(s_out[h_out:]))
            key = (m.fpr_at_95_tpr, -m.auroc)
            if best is None or key < best[0]:  # strict: ties keep the smaller eps
                best = (key, e, s_in, s_out)
        _, e, s_in, s_out = best
        return e, _fit_logistic(s_in, s_out)

    # ------------------------------------------------------------------------------ scoring
    def layer_scores(self, model: Any, inputs: Any) -> torch.Tensor:
        """Per-layer confidence scores :math:`M_\\ell(\\hat x)`, float ``(N, L)``; higher = more in."""
        self._check_fitted()
        layers, eps, bs = self._check_settings()
        if layers != MAHALANOBIS_AUTO and layers != self.layers_:
            fail("layers", f"the layers used in fit {self.layers_}", layers)
        layers = self.layers_
        if eps == MAHALANOBIS_AUTO:
            eps = self.eps_
        model = check_module("model", model)
        inputs = check_batch_inputs("inputs", inputs)
        resolved = resolve_layers(model, layers)
        out = [self._batch_scores(model, inputs[i:i + bs], resolved, eps)
               for i in range(0, inputs.shape[0], bs)]
        return torch.cat(out).to(inputs.dtype)

    def _params(self, j: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return self.means_[j].to(device), self.precision_[j].to(device)

    def _check_dim(self, j: int, f: torch.Tensor) -> None:
        if f.shape[1] != self.means_[j].shape[1]:
            raise InvalidParameterError(
                f"The 'model' parameter must be the model used in fit: layer '{self.layers_[j]}' had "
                f"{self.means_[j].shape[1]} features. Got {f.shape[1]} instead.")

    def _batch_scores(self, model: torch.nn.Module, x: torch.Tensor, resolved, eps: float) -> torch.Tensor:
        with frozen_params(model):
            if eps == 0.0:
                with torch.no_grad():
                    _, feats = forward_features(model, x, resolved)
                cols = []
                for j, f in enumerate(feats):
                    self._check_dim(j, f)
                    cols.append(-_distances(f, *self._params(j, f.device)).amin(dim=1))
                return torch.stack(cols, dim=1)
            cols = []
            for j, layer in enumerate(resolved):
                x_hat = self._preprocess(model, x, (layer,), j, eps)
                with torch.no_grad():
                    _, (f,) = forward_features(model, x_hat, (layer,))
                cols.append(-_distances(f, *self._params(j, f.device)).amin(dim=1))
            return torch.stack(cols, dim=1)

    def _preprocess(self, model, x: torch.Tensor, resolved, j: int, eps: float) -> torch.Tensor:
        """``x - eps * sign(grad_x d_chat(x))``: one step towards the closest class-conditional mean."""
        x_req = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            _, (f,) = forward_features(model, x_req, resolved)
            self._check_dim(j, f)
            d = _distances(f, *self._params(j, f.device))
            c_hat = d.detach().argmin(dim=1, keepdim=True)
            (grad,) = torch.autograd.grad(d.gather(1, c_hat).sum(), x_req)
        return (x.detach() - eps * grad.sign()).to(x.dtype)

    def score(self, model: Any, inputs: Any) -> torch.Tensor:
        """Ensemble confidence score, float ``(N,)``; higher = more in-distribution."""
        s = self.layer_scores(model, inputs)
        if self.combiner_ is None:
            return s.mean(dim=1)
        z = self.combiner_.decision_function(s.detach().cpu().double().numpy())
        return torch.as_tensor(z, dtype=s.dtype, device=s.device)


def _fit_logistic(s_in: np.ndarray, s_out: np.ndarray):
    """StandardScaler + LogisticRegression on per-layer scores, in = 1, out = 0."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([s_in, s_out])
    y = np.concatenate([np.ones(len(s_in)), np.zeros(len(s_out))])
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
