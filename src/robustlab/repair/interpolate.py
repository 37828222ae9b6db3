"""Weight interpolation between two models of one architecture (WiSE-FT / RiFT).

Two models ``a`` and ``b`` with the same modules and state-dict entries are mixed entry by entry,

.. math:: \\theta_\\alpha = (1 - \\alpha)\\,\\theta_a + \\alpha\\,\\theta_b,

(Wortsman et al. 2022, "Robust fine-tuning of zero-shot models", CVPR, Sec. 2: WiSE-FT, the
weight-space ensemble of a zero-shot and a fine-tuned model; Zhu et al. 2023, "Improving
generalization of adversarial training via robust critical fine-tuning", ICCV, Sec. 3: RiFT's
last step interpolates the adversarially trained and the fine-tuned weights and keeps the
coefficient that improves clean accuracy without compromising robustness). :func:`interpolation_curve`
traces clean and robust accuracy (an AutoAttack-style suite of :func:`robustlab.adversarial.evaluate`)
over a grid of coefficients.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustlab._checks import (
    check_choice,
    check_generator,
    check_inputs,
    check_labels,
    check_number,
    fail,
)
from robustlab._constants import (
    INTERP_INTEGER_BUFFER_SWITCH,
    INTERP_MAX_ALPHAS,
)
from robustlab.errors import InvalidTypeError

__all__ = ["InterpolationCurve", "interpolate_weights", "interpolation_curve", "plot_interpolation"]


# ----------------------------------------------------------------------------- weights
def interpolate_weights(model_a: nn.Module, model_b: nn.Module, alpha: float) -> nn.Module:
    """A new model whose weights are ``(1 - alpha) * a + alpha * b``.

    Parameters
    ----------
    model_a, model_b : nn.Module
        Two models of one architecture: the same module names and types, the same state-dict
        keys, shapes and dtypes (e.g. a standard and an adversarially trained copy of one network).
        Neither is changed.
    alpha : float
        The mixing coefficient, any finite real. ``0`` gives ``model_a``'s weights and ``1``
        ``model_b``'s, bit for bit. Values outside ``[0, 1]`` extrapolate along the line through
        the two weight vectors (as in Ilharco et al. 2023's task arithmetic, which adds
        and subtracts weight differences with coefficients beyond [0, 1]); such a model may be far from both and should be evaluated.

    Returns
    -------
    nn.Module
        A deep copy of ``model_a`` (same class, hooks, train/eval mode, ``requires_grad`` flags and
        device) holding the mixed state.

    Raises
    ------
    InvalidTypeError
        A model is not an ``nn.Module``, or ``alpha`` is not a real number.
    InvalidParameterError
        ``alpha`` is NaN or infinite, or the architectures differ (the message names the first
        differing module or state-dict entry).

    Notes
    -----
    Every *floating* state-dict entry is mixed: parameters and floating buffers alike, so a
    BatchNorm layer's running mean and variance move with its weights (as the reference WiSE-FT
    code mixes the whole state dict, mlfoundations/wise-ft ``src/wise_ft.py``). The mix is computed
    in at least float32 (float64 stays float64) and cast back to the entry's dtype. ``alpha == 0``
    and ``alpha == 1`` copy the endpoint's tensors instead of computing them, so that even
    ``-0.0``, ``inf`` or ``NaN`` entries come back unchanged.

    Integer and boolean buffers (BatchNorm's ``num_batches_tracked``) cannot be mixed; they are
    taken from the nearer endpoint: ``model_a`` for ``alpha <= 0.5``, ``model_b`` above. They only
    matter when training resumes (``num_batches_tracked`` is BatchNorm's step count when
    ``momentum=None``).

    Entries of ``model_b`` on another device are moved to ``model_a``'s.

    Examples
    --------
    >>> import torch
    >>> a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    >>> mid = interpolate_weights(a, b, 0.5)
    >>> torch.allclose(mid.weight, (a.weight + b.weight) / 2)
    True
    """
    _check_model("model_a", model_a)
    _check_model("model_b", model_b)
    alpha = check_number("alpha", alpha)
    check_same_architecture(model_a, model_b)
    return _interpolate_impl(model_a, model_b, alpha)


def _check_model(name: str, model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        fail(name, "a torch.nn.Module (weights are read from its state dict)", model,
             error=InvalidTypeError)
    return model


def check_same_architecture(model_a: nn.Module, model_b: nn.Module, *, name: str = "model_b",
                            other: str = "model_a") -> None:
    """Raise a one-line error naming the first module or state-dict entry where the models differ."""
    expected = f"a model with the architecture of '{other}'"
    mods_a, mods_b = dict(model_a.named_modules()), dict(model_b.named_modules())
    for key in [*mods_a, *(k for k in mods_b if k not in mods_a)]:  # model_a's order: a stable message
        if key not in mods_b or key not in mods_a:
            where = "lacks" if key not in mods_b else "has an extra"
            fail(name, expected, f"a model that {where} the module '{key}'", describe_got=False)
    for key, mod in mods_a.items():
        if type(mods_b[key]) is not type(mod):
            fail(name, expected, f"a model whose module '{key or '(root)'}' is a "
                 f"{type(mods_b[key]).__name__}, not a {type(mod).__name__}", describe_got=False)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    for key in sorted(state_a.keys() ^ state_b.keys()):
        where = "lacks" if key not in state_b else "has an extra"
        fail(name, expected, f"a model that {where} the parameter '{key}'", describe_got=False)
    for key, ta in state_a.items():
        tb = state_b[key]
        if tb.shape != ta.shape:
            fail(name, expected, f"a model whose parameter '{key}' has shape {tuple(tb.shape)} where "
                 f"'{other}' has {tuple(ta.shape)}", describe_got=False)
        if tb.dtype != ta.dtype:
            fail(name, expected, f"a model whose parameter '{key}' has dtype "
                 f"{str(tb.dtype).replace('torch.', '')} where '{other}' has "
                 f"{str(ta.dtype).replace('torch.', '')}", describe_got=False)


def _interpolate_impl(model_a: nn.Module, model_b: nn.Module, alpha: float) -> nn.Module:
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    mixed: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for key, ta in state_a.items():
            tb = state_b[key].to(ta.device)
            if alpha == 0.0:
                mixed[key] = ta.clone()
            elif alpha == 1.0:
                mixed[key] = tb.clone()
            elif ta.is_floating_point() or ta.is_complex():
                wide = torch.promote_types(ta.dtype, torch.float32)
                a64, b64 = ta.to(wide), tb.to(wide)
                mixed[key] = ((1.0 - alpha) * a64 + alpha * b64).to(ta.dtype)
            else:
                mixed[key] = (ta if alpha <= INTERP_INTEGER_BUFFER_SWITCH else tb).clone()
    out = copy.deepcopy(model_a)
    out.load_state_dict(mixed)
    return out


# ----------------------------------------------------------------------------- curve
@dataclass(frozen=True)
class InterpolationCurve:
    """Clean and robust accuracy of the interpolated models along a grid of coefficients.

    Attributes
    ----------
    alphas : tuple of float, length G
        The mixing coefficients, in the order given (``0`` is ``model_a``, ``1`` is ``model_b``).
    clean_accuracy : tuple of float, length G
    robust_accuracy : tuple of float, length G
        Robust accuracy under the suite at ``eps`` (the per-example worst case over its attacks).
    eps : float
    norm : str
    suite : str
    num_examples : int
    seconds : float
        Wall time of the whole curve.
    """

    alphas: tuple[float, ...]
    clean_accuracy: tuple[float, ...]
    robust_accuracy: tuple[float, ...]
    eps: float
    norm: str
    suite: str
    num_examples: int
    seconds: float

    def select_alpha(self, *, max_robust_drop: float = 0.0) -> float:
        """The coefficient with the best clean accuracy among those that keep robustness.

        A RiFT-style selection: RiFT (Zhu et al. 2023, Sec. 3) keeps the interpolation of the
        adversarially trained and fine-tuned weights that improves clean accuracy without
        compromising robustness. Here, of the coefficients whose robust accuracy is at most
        ``max_robust_drop`` below the best robust accuracy on the curve, the one with the highest
        clean accuracy; ties go to the higher robust accuracy, then to the first in
        :attr:`alphas`. On a curve between a robust and a standard model the best robust accuracy
        is usually the robust endpoint's, RiFT's reference.

        Parameters
        ----------
        max_robust_drop : float in [0, 1], default 0.0

        Returns
        -------
        float
        """
        drop = check_number("max_robust_drop", max_robust_drop, low=0.0, high=1.0)
        floor = max(self.robust_accuracy) - drop
        keep = [i for i, r in enumerate(self.robust_accuracy) if r >= floor - 1e-12]
        best = max(keep, key=lambda i: (self.clean_accuracy[i], self.robust_accuracy[i], -i))
        return self.alphas[best]

    def to_rows(self) -> list[dict[str, Any]]:
        """``[{"metric", "value", "params"}]`` rows: clean and robust accuracy per coefficient."""
        base = {"eps": self.eps, "norm": self.norm, "suite": self.suite}
        rows = []
        for a, c, r in zip(self.alphas, self.clean_accuracy, self.robust_accuracy):
            rows.append({"metric": "clean_accuracy", "value": c, "params": dict(base, alpha=a)})
            rows.append({"metric": "robust_accuracy", "value": r, "params": dict(base, alpha=a)})
        return rows

    def plot(self, *, ax: Any = None, title: str | None = None) -> Any:
        """Draw the curve; see :func:`plot_interpolation`."""
        return plot_interpolation(self, ax=ax, title=title)


def interpolation_curve(
    model_a: nn.Module,
    model_b: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    alphas: Sequence[float],
    eps: float,
    norm: str = "linf",
    suite: str = "fast",
    generator: torch.Generator,
    batch_size: int | None = None,
) -> InterpolationCurve:
    """Clean and robust accuracy of :func:`interpolate_weights` ``(model_a, model_b, alpha)`` per alpha.

    Parameters
    ----------
    model_a, model_b : nn.Module
        Two models of one architecture (e.g. standard and adversarially trained). Not changed.
    inputs : float Tensor (N, ...)
        Values in ``[0, 1]``.
    labels : int64 Tensor (N,)
    alphas : sequence of float
        Finite coefficients, at least one, at most 1000, no repeats (any order; values outside
        ``[0, 1]`` extrapolate).
    eps : float >= 0
        Radius of the threat model.
    norm : {"linf", "l2", "l1"}, default "linf"
    suite : {"standard", "plus", "rand", "fast"}, default "fast"
        The suite of :func:`robustlab.adversarial.evaluate` (``"fast"``: APGD-CE + APGD-T, enough
        to rank the points of a curve; run ``"standard"`` on the chosen model).
    generator : torch.Generator
        Every coefficient is evaluated with a copy of its state (common random numbers: the points
        of the curve differ by their weights, not by their random draws), so the point at
        ``alpha = 0`` equals ``evaluate(model_a, ..., generator=g)`` for a generator ``g`` in the
        same state. Afterwards ``generator`` is advanced as by one evaluation.
    batch_size : int, optional
        As in :func:`~robustlab.adversarial.evaluate` (250 on an accelerator, 128 on CPU).

    Returns
    -------
    InterpolationCurve

    Examples
    --------
    >>> curve = interpolation_curve(standard, robust, x, y, alphas=[0, 0.5, 1], eps=8 / 255,
    ...                             generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    >>> curve.select_alpha(max_robust_drop=0.01)  # doctest: +SKIP
    """
    from robustlab.adversarial import NORMS
    from robustlab.adversarial.evaluate import SUITES, evaluate

    _check_model("model_a", model_a)
    _check_model("model_b", model_b)
    grid = check_alphas("alphas", alphas)
    inputs = check_inputs("inputs", inputs)
    labels = check_labels("labels", labels, n=inputs.shape[0])
    eps = check_number("eps", eps, low=0.0)
    check_choice("norm", norm, NORMS)
    check_choice("suite", suite, SUITES)
    generator = check_generator("generator", generator)
    check_same_architecture(model_a, model_b)
    start = time.perf_counter()
    state = generator.get_state()
    clean, robust = [], []
    for alpha in grid:
        g = torch.Generator(device=generator.device)
        g.set_state(state)
        model = _interpolate_impl(model_a, model_b, alpha)
        result = evaluate(model, inputs, labels, eps=eps, norm=norm, suite=suite, batch_size=batch_size,
                          generator=g)
        clean.append(float(result.clean_accuracy))
        robust.append(float(result.robust_accuracy))
    generator.set_state(g.get_state())
    return InterpolationCurve(alphas=grid, clean_accuracy=tuple(clean), robust_accuracy=tuple(robust),
                              eps=eps, norm=norm, suite=suite, num_examples=int(labels.shape[0]),
                              seconds=time.perf_counter() - start)


def check_alphas(name: str, alphas: Any) -> tuple[float, ...]:
    """A non-empty sequence of distinct finite reals (at most ``INTERP_MAX_ALPHAS``)."""
    if isinstance(alphas, (str, bytes)) or not isinstance(alphas, (Sequence, torch.Tensor)) \
            and not hasattr(alphas, "__array__"):
        fail(name, "a sequence of finite real numbers", alphas, error=InvalidTypeError)
    values = alphas.tolist() if hasattr(alphas, "tolist") else list(alphas)
    if not values or len(values) > INTERP_MAX_ALPHAS:
        fail(name, f"a sequence of 1 to {INTERP_MAX_ALPHAS} finite real numbers", alphas)
    out = tuple(check_number(name, v) for v in values)
    if len(set(out)) != len(out):
        fail(name, "a sequence without repeated values", alphas)
    return out


# ----------------------------------------------------------------------------- plot
def plot_interpolation(curve: InterpolationCurve, *, ax: Any = None, title: str | None = None) -> Any:
    """Draw clean and robust accuracy against the mixing coefficient.

    Parameters
    ----------
    curve : InterpolationCurve
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure is created when omitted.
    title : str, optional
        Default names the threat model and suite.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding ``ax``. Matplotlib is imported only when this is called.
    """
    if not isinstance(curve, InterpolationCurve):
        fail("curve", "an InterpolationCurve (from interpolation_curve)", curve, error=InvalidTypeError)
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(5.0, 3.5))
    else:
        fig = ax.figure
    order = sorted(range(len(curve.alphas)), key=lambda i: curve.alphas[i])
    xs = [curve.alphas[i] for i in order]
    ax.plot(xs, [curve.clean_accuracy[i] for i in order], marker="o", label="clean accuracy")
    ax.plot(xs, [curve.robust_accuracy[i] for i in order], marker="s", label="robust accuracy")
    ax.set_xlabel("alpha  (0: model a, 1: model b)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, alpha=0.3)
    ax.set_title(title if title is not None else
                 f"weight interpolation, {curve.norm} eps={curve.eps:.4g}, {curve.suite} suite")
    ax.legend(loc="best")
    return fig

