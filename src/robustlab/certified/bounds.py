r"""Certified output bounds by bound propagation: IBP, CROWN and CROWN-IBP.

For inputs in the threat model ``{x' : ||x' - x|| <= eps} ∩ [0, 1]^d`` these functions return
lower and upper bounds on the logits (or on ``C @ logits`` for a specification ``C``) that hold
for *every* point of that set, so ``lower > 0`` on every margin ``z_y - z_j`` proves that no
perturbation in the set changes the prediction.

- **IBP** (Gowal et al. 2018, "On the effectiveness of interval bound propagation", Sec. 3,
  Eq. 6): intervals pushed forward layer by layer (centre/radius form for affine layers). With a
  specification the last linear layer is merged with ``C`` before the interval step (the
  "elision" of Sec. 3; auto_LiRPA does the same).
- **CROWN** (Zhang et al. 2018, "Efficient neural network robustness certification with general
  activation functions", Sec. 3.2, Theorem 3.2): a backward pass of linear coefficients
  ``A`` of shape ``(N, S, *layer_shape)`` from the specification to the input; each unstable
  ReLU (``l < 0 < u``) is replaced by its upper chord through ``(l, 0)`` and ``(u, u)`` and the
  adaptive lower line of slope 1 if ``u > -l`` else 0 (the choice of auto_LiRPA's default
  ``activation_bound_option='adaptive'``, Verified-Intelligence/auto_LiRPA
  ``auto_LiRPA/operators/relu.py`` ``_relu_lower_bound_init``: ``upper_k > 0.5``, which is
  ``u > -l``). Pre-activation bounds of every ReLU are themselves computed by CROWN, layer by
  layer, with an identity specification, for the neurons that IBP (run on the CROWN-tightened
  earlier layers) leaves unstable, each example for its own unstable neurons; the result is
  intersected with that IBP interval. auto_LiRPA's default is the same with the union of the
  batch's unstable neurons (sparse intermediate bounds with IBP reference bounds,
  ``backward_bound.py`` ``get_sparse_C`` / ``restore_sparse_bounds``). The relaxation of a
  neuron IBP proves stable is exact whatever its interval, so the two can differ only through
  the IBP reference intervals of later layers; they agree within a few 1e-6 relative
  (docs/benchmarks/certified_bounds.md), and here an example's bounds do not depend on the
  rest of its batch.
- **CROWN-IBP** (Zhang et al. 2020, "Towards stable and efficient training of verifiably robust
  neural networks", Sec. 3, Eq. 9): IBP pre-activation bounds, one CROWN pass for the output.

LeakyReLU with slope ``a`` in ``[0, 1]`` is convex and relaxed the same way: chord above, line of
slope 1 or ``a`` below (1 when the chord's slope exceeds 1/2, as auto_LiRPA's adaptive option).

Input set and norms
-------------------
``norm="linf"``: the set is the box ``[clip(x - eps, 0, 1), clip(x + eps, 0, 1)]`` exactly;
IBP starts from it and CROWN concretises the input-layer linear bound ``A x' + b`` on it
(``A+ lo + A- hi``).

``norm="l2"``: the set ``B_2(x, eps) ∩ [0, 1]^d`` is contained both in the ball and in the box
``[clip(x - eps, 0, 1), clip(x + eps, 0, 1)]`` (every coordinate moves by at most
``||delta||_2``). CROWN's input concretisation takes the larger (tighter) of the two sound
lower bounds: the dual-norm bound ``A x - eps ||A||_2`` over the ball (Zhang et al. 2018,
Theorem 3.2 with ``q = 2``; auto_LiRPA ``perturbations.py`` ``concretize_matrix``:
``A.norm(self.dual_norm, -1) * self.eps``) and the box bound. IBP starts from the box; for
the first Linear/Conv2d layer (reached through Flatten/Normalize/BatchNorm only) the interval is
also intersected with the exact dual-norm interval ``W x + b ± eps ||row of W||_2`` (as
auto_LiRPA's ``BoundLinear.interval_propagate`` does for non-Linf perturbations,
``operators/linear.py``). Both intersections are of sound sets, so the result is sound; where
the box clips the ball (inputs near 0 or 1) the bounds are usually tighter than auto_LiRPA's,
which bound the whole ball.

Speed
-----
CROWN's intermediate bounds of convolutional layers propagate each neuron's coefficients only
on its receptive field ("patches", as auto_LiRPA's ``conv_mode='patches'``,
``auto_LiRPA/patches.py``; switching to dense maps part-way where the windows outgrow their
layers), one row per unstable (example, neuron) pair; coefficients are laid
out specification-first and processed in chunks (``CERTIFIED_CROWN_CHUNK_ELEMENTS`` on CPU,
``CERTIFIED_CROWN_CHUNK_ELEMENTS_ACCELERATOR`` on a GPU); small
convolutions are applied as matrix products. The torch.fx trace of a model is kept and reused
while the model's structure, modes and attributes are unchanged (weights are read on every
call), so repeated calls (certified training, sweeps over eps) do not re-trace.

:func:`differentiable_bounds` returns the same bounds attached to the autograd graph (for IBP and
CROWN-IBP certified training), using the model in its current mode; see its docstring for
BatchNorm in training mode (clean batch statistics) and Dropout (refused in training mode).

All bounds are computed in the dtype of ``x`` (use float64 for the tightest rounding); floating
point rounding in the affine layers is not accounted for (as in IBP/CROWN papers and auto_LiRPA).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab._checks import (
    as_tensor,
    check_choice,
    check_finite,
    check_labels,
    check_number,
    fail,
)
from robustlab._constants import (
    CERTIFIED_CONV_MATRIX_ELEMENTS,
    CERTIFIED_CROWN_CHUNK_ELEMENTS,
    CERTIFIED_CROWN_CHUNK_ELEMENTS_ACCELERATOR,
    CERTIFIED_METHODS,
    CERTIFIED_NORMS,
)
from robustlab._model_state import eval_mode
from robustlab.certified._graph import Graph, Op, trace
from robustlab.errors import InvalidTypeError, ShapeError

__all__ = ["bounds", "differentiable_bounds", "margin_spec", "verified", "verified_accuracy"]

Interval = tuple[torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------- validation
def _check_common(model: Any, x: Any, eps: Any, norm: Any, method: Any) -> tuple[torch.Tensor, float]:
    if not isinstance(model, nn.Module):
        fail("model", "a torch.nn.Module", model, error=InvalidTypeError)
    x = as_tensor("x", x)
    if x.ndim < 2:
        raise ShapeError(f"The 'x' parameter must have shape (N, ...) with at least 2 dims. "
                         f"Got {tuple(x.shape)} instead.", expected=(2,), got=tuple(x.shape))
    if not x.is_floating_point():
        fail("x", "a floating-point tensor", x, error=InvalidTypeError)
    check_finite("x", x)
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        fail("x", "a tensor with values in [0, 1] (normalisation is a layer inside the model)",
             f"values in [{float(x.min()):.4g}, {float(x.max()):.4g}]", describe_got=False)
    eps = check_number("eps", eps, low=0.0)
    check_choice("norm", norm, CERTIFIED_NORMS)
    check_choice("method", method, CERTIFIED_METHODS)
    return x, float(eps)


def margin_spec(labels: Any, num_classes: int) -> torch.Tensor:
    """Specification of the margins ``z_y - z_j`` for every ``j != y``.

    Parameters
    ----------
    labels : int64 Tensor, shape (N,)
    num_classes : int, >= 2

    Returns
    -------
    Tensor, shape (N, num_classes - 1, num_classes), float32 on the labels' device
        Row ``s`` has ``+1`` at ``y`` and ``-1`` at the ``s``-th class other than ``y``
        (classes in increasing order). Cast it to the inputs' dtype if needed (:func:`bounds`
        does).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        fail("num_classes", "an int >= 2", num_classes)
    labels = check_labels("labels", labels, num_classes=num_classes)
    n = labels.shape[0]
    eye = torch.eye(num_classes, device=labels.device)
    others = torch.arange(num_classes, device=labels.device).expand(n, num_classes)
    others = others[others != labels[:, None]].reshape(n, num_classes - 1)
    return eye[labels][:, None, :] - eye[others]


# ----------------------------------------------------------------------------- public API
def bounds(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    method: str = "crown",
    C: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds on the logits (or ``C @ logits``) over the perturbation set.

    Parameters
    ----------
    model : nn.Module
        Classifier on inputs in [0, 1], traceable by ``torch.fx``, built from Linear, Conv2d,
        ReLU, LeakyReLU (slope in [0, 1]), BatchNorm1d/2d (run in eval mode), Flatten,
        AvgPool2d, AdaptiveAvgPool2d, robustlab's ``Normalize``, Identity/Dropout and additions
        (residual connections). Its state is never changed.
    x : Tensor, shape (N, ...)
        Clean inputs in [0, 1]; the bounds follow its device and dtype.
    eps : float, >= 0
        Radius of the ``norm`` ball (the set is the ball intersected with [0, 1]^d).
    norm : {"linf", "l2"}
    method : {"ibp", "crown", "crown-ibp"}
        See the module docstring.
    C : Tensor, shape (N, S, K), optional
        Specification: the bounds are on ``C @ logits`` (e.g. :func:`margin_spec`).

    Returns
    -------
    lower, upper : Tensor, shape (N, K), or (N, S) when ``C`` is given
    """
    x, eps = _check_common(model, x, eps, norm, method)
    C = _check_spec(C, x)
    with eval_mode(model), torch.no_grad():
        graph = trace(model, x)
        Cx = _check_spec_against(graph, C, x)
        return _bounds_impl(graph, x, eps, norm, (method,), Cx)[method]


def differentiable_bounds(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    methods: Any = ("ibp",),
    C: torch.Tensor | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The bounds of :func:`bounds`, differentiable with respect to the model's parameters.

    For certified training (IBP: Gowal et al. 2018, Sec. 3; CROWN-IBP: Zhang et al. 2020,
    Sec. 3): the returned tensors are attached to the autograd graph, so a loss built on them
    back-propagates to every parameter with ``requires_grad=True`` (and to ``x`` if it requires
    a gradient). The numbers are those of :func:`bounds` for the same network; with several
    methods the IBP pass is computed once and shared ("ibp" and "crown-ibp" use the same
    intervals).

    The model is used in its **current** mode and is not modified (modes, ``requires_grad``,
    parameters and buffers, running statistics included, stay as they are):

    - BatchNorm in eval mode normalises with its running statistics, as in :func:`bounds`.
    - BatchNorm in training mode (or without running statistics) normalises with the mean and
      (biased) variance of the *clean* batch ``x`` at its input, which are then constants of
      the bounded network, gradients flowing through them as in an ordinary training-mode
      forward. This is auto_LiRPA's default for BatchNorm in training mode
      (Verified-Intelligence/auto_LiRPA ``auto_LiRPA/operators/normalization.py``,
      ``BoundBatchNormalization``, ``bn`` mode ``"forward"``: "mean and variance estimated from
      clean forward pass") and what the IBP reference implementation does
      (deepmind/interval-bound-propagation ``interval_bound_propagation/src/layers.py``: its
      ``BatchNorm`` keeps the statistics of the nominal pass and propagates bounds with them).
      The bounds are therefore sound for *the network whose BatchNorm layers use the clean
      batch's statistics* (contained outputs at every point of the set), not for a network
      that would renormalise each perturbed batch with its own statistics. Running statistics
      are not updated here (the trainer's clean forward does that). A BatchNorm layer whose
      batch has a single value per channel raises (as PyTorch does).
    - Dropout in training mode (``p > 0``) raises an error naming the layer: its output is
      random, so there is no fixed network to bound.

    Parameters
    ----------
    model : nn.Module
        As for :func:`bounds`.
    x : Tensor, shape (N, ...)
        Clean inputs in [0, 1].
    eps : float, >= 0
    norm : {"linf", "l2"}
    methods : sequence of {"ibp", "crown-ibp", "crown"}, default ("ibp",)
        Methods to compute (a single name is accepted too); repeated names count once.
    C : Tensor, shape (N, S, K), optional
        Specification, as for :func:`bounds`.

    Returns
    -------
    dict mapping each method to ``(lower, upper)``, each of shape (N, K) or (N, S)
    """
    x, eps = _check_common(model, x, eps, norm, "ibp")
    methods = _check_methods(methods)
    C = _check_spec(C, x)
    graph = trace(model, x, differentiable=True)
    Cx = _check_spec_against(graph, C, x)
    graph = _with_batch_statistics(graph, x)
    return _bounds_impl(graph, x, eps, norm, methods, Cx)


def _check_methods(methods: Any) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    if not isinstance(methods, (list, tuple)) or not methods:
        fail("methods", f"a non-empty sequence of names from {list(CERTIFIED_METHODS)}", methods)
    for m in methods:
        check_choice("methods", m, CERTIFIED_METHODS)
    return tuple(dict.fromkeys(methods))


def _check_spec(C: Any, x: torch.Tensor) -> torch.Tensor | None:
    if C is None:
        return None
    C = as_tensor("C", C)
    if C.ndim != 3 or C.shape[0] != x.shape[0]:
        raise ShapeError(f"The 'C' parameter must have shape (N, S, K) with N = {x.shape[0]}. "
                         f"Got {tuple(C.shape)} instead.", expected=(x.shape[0],), got=tuple(C.shape))
    check_finite("C", C)
    return C


def _check_logits_shape(graph: Graph) -> tuple[int, ...]:
    k_shape = graph.ops[graph.output].shape
    if len(k_shape) != 1:
        fail("model", "a model returning logits of shape (N, K)",
             f"a model whose output has shape (N, {', '.join(map(str, k_shape))})", describe_got=False)
    return k_shape


def _check_spec_against(graph: Graph, C: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """Check the model's output and ``C``'s K; return ``C`` in ``x``'s dtype and device."""
    k_shape = _check_logits_shape(graph)
    if C is None:
        return None
    if C.shape[2] != k_shape[0]:
        raise ShapeError(f"The 'C' parameter must have shape (N, S, K) with K = {k_shape[0]} "
                         f"(the model's number of outputs). Got {tuple(C.shape)} instead.",
                         expected=(k_shape[0],), got=tuple(C.shape))
    return C.to(dtype=x.dtype, device=x.device)


def verified(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    method: str = "crown",
) -> torch.Tensor:
    """``True`` where every margin ``z_y - z_j`` has a lower bound ``> 0`` (BoolTensor, (N,)).

    A ``True`` entry is a proof that no input in the set (see :func:`bounds`) changes the
    prediction away from ``labels``; ``False`` means "not proven", not "attackable".
    """
    x, eps = _check_common(model, x, eps, norm, method)
    labels = check_labels("labels", labels, n=x.shape[0])
    with eval_mode(model), torch.no_grad():
        graph = trace(model, x)
        k_shape = _check_logits_shape(graph)
        labels = check_labels("labels", labels, num_classes=k_shape[0], n=x.shape[0])
        if k_shape[0] < 2:
            return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        C = margin_spec(labels.to(x.device), k_shape[0]).to(dtype=x.dtype)
        lower, _ = _bounds_impl(graph, x, eps, norm, (method,), C)[method]
    return (lower > 0).all(dim=1)


def verified_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    method: str = "crown",
) -> float:
    """Fraction of examples :func:`verified` proves robust (0.0 for an empty batch)."""
    v = verified(model, x, labels, eps=eps, norm=norm, method=method)
    return float(v.float().mean()) if v.numel() else 0.0


# ----------------------------------------------------------------------------- implementation
def _bounds_impl(graph: Graph, x: torch.Tensor, eps: float, norm: str, methods: tuple[str, ...],
                 C: torch.Tensor | None) -> dict[str, Interval]:
    """Bounds of every method in ``methods``; "ibp" and "crown-ibp" share one IBP pass."""
    ops = graph.ops
    if x.shape[0] == 0:
        s = ops[graph.output].shape[0] if C is None else C.shape[1]
        empty = x.new_zeros((0, s))
        return {m: (empty, empty.clone()) for m in methods}
    relu_inputs = {op.args[0] for op in ops if op.kind in ("relu", "leaky_relu")}
    out: dict[str, Interval] = {}
    if "ibp" in methods or "crown-ibp" in methods:
        elide = C is not None and ops[graph.output].kind == "linear"
        need = []
        if "ibp" in methods:
            need.append(graph.output - 1 if elide else graph.output)
        if "crown-ibp" in methods:
            need.append(max(relu_inputs, default=0))
        affine_images: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        ibp = _ibp_all(graph, x, eps, norm, upto=max(need), affine_images=affine_images)
        if "ibp" in methods:
            out["ibp"] = _ibp_output(graph, ibp, C, eps=eps, norm=norm, affine_images=affine_images)
        if "crown-ibp" in methods:
            out["crown-ibp"] = _crown_output(graph, x, eps, norm, {i: ibp[i] for i in relu_inputs}, C)
    if "crown" in methods:  # pre-activation bounds by CROWN, layer by layer (IBP where exact)
        pre: dict[int, Interval] = {}

        def refine(i: int, lo: torch.Tensor, hi: torch.Tensor, exact: bool) -> Interval:
            if i in relu_inputs:
                if not exact:
                    lo, hi = _crown_node(graph, i, x, eps, norm, pre, lo, hi)
                pre[i] = (lo, hi)
            return lo, hi

        _ibp_all(graph, x, eps, norm, refine=refine, upto=max(relu_inputs, default=0))
        out["crown"] = _crown_output(graph, x, eps, norm, pre, C)
    return {m: out[m] for m in methods}


def _chunk_elements(x: torch.Tensor) -> int:
    """Elements one chunk of CROWN coefficients may hold on ``x``'s device."""
    if x.device.type == "cpu":
        return CERTIFIED_CROWN_CHUNK_ELEMENTS
    return CERTIFIED_CROWN_CHUNK_ELEMENTS_ACCELERATOR


def _crown_output(graph: Graph, x: torch.Tensor, eps: float, norm: str, pre: dict[int, Interval],
                  C: torch.Tensor | None) -> Interval:
    """One CROWN backward pass from the output (spec ``C``, identity if None) given ``pre``,
    over chunks of examples (see :func:`_crown_node` for the chunk size)."""
    n, k = x.shape[0], graph.ops[graph.output].shape[0]
    if C is None:
        C = torch.eye(k, dtype=x.dtype, device=x.device).expand(n, k, k)
    s = C.shape[1]
    spec = torch.cat([C, -C], dim=1).transpose(0, 1)  # (2S, N, K)
    widest = max(math.prod(op.shape) for op in graph.ops)
    chunk = max(1, _chunk_elements(x) // (2 * s * widest))
    relax = {j: _relax(op, *pre[op.args[0]]) for j, op in enumerate(graph.ops)
             if op.kind in ("relu", "leaky_relu")}
    parts = []
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        relax_c = {j: tuple(t[sl] for t in maps) for j, maps in relax.items()}
        parts.append(_backward(graph, graph.output, spec[:, sl], x[sl], eps, norm, {}, relax_c))
    lower_all = torch.cat(parts, dim=1).T
    return lower_all[:, :s], -lower_all[:, s:]


def _with_batch_statistics(graph: Graph, x: torch.Tensor) -> Graph:
    """Replace each ``batchnorm`` op by the ``scale_shift`` of the clean batch's statistics.

    A clean forward pass through the graph gives each such layer's input ``v`` on ``x``; its
    per-channel mean and biased variance over the batch (and spatial) dimensions make the
    layer the affine map ``(v - mean) / sqrt(var + eps) * weight + bias`` (as PyTorch's
    training-mode BatchNorm computes it on ``x``).
    """
    if not any(op.kind == "batchnorm" for op in graph.ops):
        return graph
    ops = list(graph.ops)
    values: list[torch.Tensor] = []
    n = x.shape[0]
    for i, op in enumerate(ops):
        if op.kind == "input":
            values.append(x)
            continue
        if op.kind == "batchnorm":
            v = values[op.args[0]]
            dims = [0] + list(range(2, v.ndim))
            if v.numel() // max(1, v.shape[1]) <= 1:
                fail("x", f"a batch with more than one value per channel for {op.params['layer']} "
                     "in training mode", f"a batch of {n}", describe_got=False)
            mean, var = v.mean(dims), v.var(dims, unbiased=False)
            p = op.params
            scale = 1.0 / torch.sqrt(var + p["eps"])
            if p["weight"] is not None:
                scale = scale * p["weight"]
            shift = -mean * scale
            if p["bias"] is not None:
                shift = shift + p["bias"]
            view = (-1,) + (1,) * (v.ndim - 2)
            ops[i] = Op("scale_shift", op.args, op.shape, {"scale": scale.reshape(view),
                                                          "shift": shift.reshape(view)}, op.name)
        values.append(_forward_op(ops[i], values, n))
    return Graph(ops, graph.output)


def _forward_op(op: Op, values: list[torch.Tensor], n: int) -> torch.Tensor:
    """The value of one (non-input) operation given its inputs' values."""
    v, p = values[op.args[0]], op.params
    if op.kind in ("linear", "conv"):
        return _affine_forward(op)(v, p["weight"], p["bias"])
    if op.kind == "scale_shift":
        return v * p["scale"] + p["shift"]
    if op.kind == "reshape":
        return v.reshape((n,) + op.shape)
    if op.kind in ("avgpool", "adaptive_avgpool"):
        return _pool_forward(op)(v)
    if op.kind == "add":
        c1, c2 = p["coef"]
        return c1 * v + c2 * values[op.args[1]]
    if op.kind == "relu":
        return v.clamp(min=0)
    if op.kind == "leaky_relu":
        return F.leaky_relu(v, p["slope"])
    raise AssertionError(op.kind)  # pragma: no cover - trace() only emits the kinds above


def _input_box(x: torch.Tensor, eps: float) -> Interval:
    return (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)


def _ibp_all(graph: Graph, x: torch.Tensor, eps: float, norm: str, *, refine: Any = None,
             upto: int | None = None,
             affine_images: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None) -> list[Interval]:
    """Interval of every operation (IBP, Gowal et al. 2018 Eq. 6).

    ``refine(i, lo, hi, exact)``, when given, is called on each operation's interval and returns
    the interval to propagate further (CROWN tightens pre-activation bounds this way);
    ``exact`` says that the interval is already the exact range of the operation over the input
    set (elementwise affine images of the input and one Linear/Conv2d after them), where CROWN
    would return the same interval. ``affine_images``, when given, is filled with the ops that
    are elementwise affine images of the input (see below), for :func:`_ibp_output`.
    """
    out: list[Interval] = []
    # nodes that are an elementwise affine image of the input: (value at x, elementwise scale)
    exact: dict[int, tuple[torch.Tensor, torch.Tensor]] = {} if affine_images is None else affine_images
    last = len(graph.ops) - 1 if upto is None else upto
    for i, op in enumerate(graph.ops[: last + 1]):
        n = x.shape[0]
        if op.kind == "input":
            out.append(_input_box(x, eps))
            exact[i] = (x, torch.ones((), dtype=x.dtype, device=x.device))
            continue
        lo, hi = out[op.args[0]]
        p = op.params
        if op.kind in ("linear", "conv"):
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
            f = _affine_forward(op)
            olo_hi = f(mid, p["weight"], p["bias"]), f(rad, p["weight"].abs(), None)
            res = (olo_hi[0] - olo_hi[1], olo_hi[0] + olo_hi[1])
            if op.args[0] in exact and norm == "l2":
                c, sc = exact[op.args[0]]
                sq = (sc * sc).expand(c.shape[1:]).unsqueeze(0)
                dev = eps * _sqrt0(f(sq, p["weight"] ** 2, None))
                centre = f(c, p["weight"], p["bias"])
                res = (torch.maximum(res[0], centre - dev), torch.minimum(res[1], centre + dev))
            out.append(res)
        elif op.kind == "scale_shift":
            sc, sh = p["scale"], p["shift"]
            a, b = lo * sc + sh, hi * sc + sh
            out.append((torch.minimum(a, b), torch.maximum(a, b)))
            if op.args[0] in exact:
                c, s0 = exact[op.args[0]]
                exact[i] = (c * sc + sh, s0 * sc)
        elif op.kind == "reshape":
            out.append((lo.reshape((n,) + op.shape), hi.reshape((n,) + op.shape)))
            if op.args[0] in exact:
                c, s0 = exact[op.args[0]]
                exact[i] = (c.reshape((n,) + op.shape),
                            s0.expand(c.shape[1:]).reshape(op.shape) if s0.ndim else s0)
        elif op.kind in ("avgpool", "adaptive_avgpool"):
            f = _pool_forward(op)
            out.append((f(lo), f(hi)))
        elif op.kind == "add":
            lo2, hi2 = out[op.args[1]]
            _c1, c2 = op.params["coef"]
            a2, b2 = (lo2, hi2) if c2 > 0 else (-hi2, -lo2)
            out.append((lo + a2, hi + b2))
        elif op.kind == "relu":
            out.append((lo.clamp(min=0), hi.clamp(min=0)))
        elif op.kind == "leaky_relu":
            out.append((F.leaky_relu(lo, p["slope"]), F.leaky_relu(hi, p["slope"])))
        else:  # pragma: no cover - trace() only emits the kinds above
            raise AssertionError(op.kind)
        if refine is not None:
            is_exact = i in exact or (op.kind in ("linear", "conv") and op.args[0] in exact)
            out[i] = refine(i, out[i][0], out[i][1], is_exact)
    return out


def _sqrt0(v: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(v, 0))`` with a zero (not NaN) gradient where ``v <= 0``."""
    pos = v > 0
    return torch.where(pos, torch.where(pos, v, torch.ones_like(v)).sqrt(), torch.zeros_like(v))


def _ibp_output(graph: Graph, iv: list[Interval], C: torch.Tensor | None, *, eps: float = 0.0,
                norm: str = "linf", affine_images: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
                ) -> Interval:
    """IBP bounds of the output (or of ``C @ output``) from the intervals ``iv`` of the ops
    (up to the output, or up to its input when the last layer is a Linear merged with ``C``).

    When the merged Linear reads an elementwise affine image of the input (a purely linear
    network, e.g. Normalize -> Flatten -> Linear) and ``norm="l2"``, the box interval is also
    intersected with the exact dual-norm range of ``C W``'s rows, as for a first hidden layer in
    :func:`_ibp_all`: IBP is then exact on linear networks under L2 too.
    """
    ops = graph.ops
    last = ops[graph.output]
    if C is None or last.kind != "linear":
        lo, hi = iv[graph.output]
        if C is None:
            return lo, hi
        mid, rad = (hi + lo) / 2, (hi - lo) / 2
        cm = torch.einsum("nsk,nk->ns", C, mid)
        cr = torch.einsum("nsk,nk->ns", C.abs(), rad)
        return cm - cr, cm + cr
    # elision of the last layer (Gowal et al. 2018, Sec. 3): bound C W z + C b directly
    lo, hi = iv[last.args[0]]
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    w, b = last.params["weight"], last.params["bias"]
    cw = torch.einsum("nsk,ki->nsi", C, w)
    cm = torch.einsum("nsi,ni->ns", cw, mid)
    if b is not None:
        cm = cm + torch.einsum("nsk,k->ns", C, b)
    cr = torch.einsum("nsi,ni->ns", cw.abs(), rad)
    lower, upper = cm - cr, cm + cr
    if norm == "l2" and affine_images is not None and last.args[0] in affine_images:
        c, sc = affine_images[last.args[0]]
        centre = torch.einsum("nsi,ni->ns", cw, c)
        if b is not None:
            centre = centre + torch.einsum("nsk,k->ns", C, b)
        dev = eps * _sqrt0(torch.einsum("nsi,i->ns", cw * cw, (sc * sc).expand(c.shape[1:])))
        lower, upper = torch.maximum(lower, centre - dev), torch.minimum(upper, centre + dev)
    return lower, upper


def _affine_forward(op: Op):
    if op.kind == "linear":
        return lambda z, w, b: F.linear(z, w, b)
    p = op.params
    return lambda z, w, b: F.conv2d(z, w, b, p["stride"], p["padding"], p["dilation"], p["groups"])


def _pool_forward(op: Op):
    p = op.params
    if op.kind == "adaptive_avgpool":
        return lambda z: F.adaptive_avg_pool2d(z, p["output_size"])
    return lambda z: F.avg_pool2d(z, p["kernel_size"], p["stride"], p["padding"], p["ceil_mode"],
                                  p["count_include_pad"], p["divisor_override"])


def _crown_node(graph: Graph, idx: int, x: torch.Tensor, eps: float, norm: str,
                pre: dict[int, Interval], lo: torch.Tensor, hi: torch.Tensor) -> Interval:
    """CROWN bounds of operation ``idx``, intersected with its IBP interval ``(lo, hi)``.

    Only the neurons that IBP leaves unstable (``lo < 0 < hi``) are recomputed, and each
    example only for its own unstable neurons: one backward row per (example, neuron) pair. The
    relaxation of a neuron that IBP proves stable is exact whatever its bounds, so the other
    neurons keep their IBP interval (auto_LiRPA's sparse intermediate bounds do the same with
    the union of the batch's unstable neurons, ``backward_bound.py`` ``get_sparse_C`` /
    ``restore_sparse_bounds``; per example, an example's bounds do not depend on the rest of its
    batch). Rows are chunked so one chunk's coefficients stay below
    :func:`_chunk_elements`.

    When every operation between the input and ``idx`` is convolution-like (see
    :func:`_patch_plan`), the rows are propagated as *patches*: the coefficients of one neuron
    are nonzero only on its receptive field, so each row keeps just that window, as
    auto_LiRPA's ``conv_mode='patches'`` does (``auto_LiRPA/patches.py``; Xu et al. 2020,
    "Automatic perturbation analysis for scalable certified robustness and beyond", Sec. 3.3 /
    Appendix), switching to dense maps at the layer :func:`_patch_cut` picks when windows
    outgrow their layers. Otherwise a row is a dense coefficient map of each layer's full shape.
    """
    n = x.shape[0]
    ops = graph.ops
    shape = ops[idx].shape
    flat_lo, flat_hi = lo.reshape(n, -1), hi.reshape(n, -1)
    ex, neuron = ((flat_lo < 0) & (flat_hi > 0)).nonzero(as_tuple=True)
    total_rows = ex.numel()
    if total_rows == 0:
        return lo, hi
    plan = _patch_plan(graph, idx)
    cut, per_row = idx + 1, max(math.prod(op.shape) for op in ops[: idx + 1])
    if plan is not None:
        cut, per_row = _patch_cut(graph, plan)
        if cut > idx:
            plan = None  # windows as large as the layers from the start: dense throughout
    relu_maps = {j: _relax(ops[j], *pre[op.args[0]]) for j, op in enumerate(ops[:idx])
                 if op.kind in ("relu", "leaky_relu") and (plan is None or j in plan)}
    chunk = max(1, _chunk_elements(x) // max(1, 2 * per_row))
    lows, highs = [], []
    for begin in range(0, total_rows, chunk):
        e, j = ex[begin:begin + chunk], neuron[begin:begin + chunk]
        if plan is not None:
            lower = _backward_patches(graph, idx, plan, cut, e, j, x, eps, norm, relu_maps)
        else:
            relax_rows = {k: tuple(t[e] for t in maps) for k, maps in relu_maps.items()}
            start, spec, bias = _identity_rows(graph, idx, j, x)
            lower = _backward(graph, start, spec, x[e], eps, norm, {}, relax_rows, bias)
        lows.append(lower[0])
        highs.append(-lower[1])
    new_lo = torch.maximum(flat_lo[ex, neuron], torch.cat(lows))
    new_hi = torch.minimum(flat_hi[ex, neuron], torch.cat(highs))
    new_hi = torch.maximum(new_hi, new_lo)
    out_lo = flat_lo.index_put((ex, neuron), new_lo)
    out_hi = flat_hi.index_put((ex, neuron), new_hi)
    return out_lo.reshape((n,) + shape), out_hi.reshape((n,) + shape)


def _identity_rows(graph: Graph, idx: int, neuron: torch.Tensor, x: torch.Tensor
                   ) -> tuple[int, torch.Tensor, torch.Tensor | None]:
    """Rows ``+e_neuron`` and ``-e_neuron`` of the identity specification at operation ``idx``,
    as ``(start, spec (2, R, ...), bias (2, R))`` for :func:`_backward`: for a Linear (or a Conv2d with a small
    matrix) the first backward step just selects rows of the weight matrix, so the rows start
    at its input; otherwise they are one-hot at ``idx``."""
    ops = graph.ops
    op = ops[idx]
    r = neuron.numel()
    src_shape = ops[op.args[0]].shape if op.args else ()
    mat = None
    if op.kind == "linear" and len(op.shape) == 1 and len(src_shape) == 1:
        mat = op.params["weight"]
    elif op.kind == "conv":
        mat = _dense_conv_matrix(graph, idx)
    if mat is not None:
        rows = mat[neuron]
        spec = torch.stack([rows, -rows]).reshape((2, r) + src_shape)
        b = op.params["bias"]
        if b is not None:
            b = b[neuron // (math.prod(op.shape[1:]))] if op.kind == "conv" else b[neuron]
            b = torch.stack([b, -b])
        return op.args[0], spec, b
    spec = torch.zeros((2, r, math.prod(op.shape)), dtype=x.dtype, device=x.device)
    rows_idx = torch.arange(r, device=x.device)
    spec[0, rows_idx, neuron] = 1.0
    spec[1, rows_idx, neuron] = -1.0
    return idx, spec.reshape((2, r) + op.shape), None


def _relax(op: Op, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower slope, upper slope and upper intercept of the ReLU / LeakyReLU relaxation."""
    a = op.params.get("slope", 0.0) if op.kind == "leaky_relu" else 0.0
    active, inactive = lo >= 0, hi <= 0
    unstable = ~(active | inactive)
    width = torch.where(unstable, hi - lo, torch.ones_like(lo))
    chord = (hi - a * lo) / width
    up_slope = torch.where(active, torch.ones_like(lo), torch.where(inactive, torch.full_like(lo, a), chord))
    up_icpt = torch.where(unstable, a * lo - chord * lo, torch.zeros_like(lo))
    adaptive = torch.where(chord > 0.5, torch.ones_like(lo), torch.full_like(lo, a))
    low_slope = torch.where(unstable, adaptive, up_slope)
    return low_slope, up_slope, up_icpt


def _conv_back(op: Op, in_shape: tuple[int, ...], flat: torch.Tensor) -> torch.Tensor:
    """Transpose of a Conv2d (no bias) applied to ``flat`` (B, C_out, H_out, W_out)."""
    p = op.params
    w = p["weight"]
    h_out, w_out = op.shape[1:]
    k_h, k_w = w.shape[2:]
    (st_h, st_w), (pd_h, pd_w), (dl_h, dl_w) = p["stride"], p["padding"], p["dilation"]
    op_h = in_shape[1] - ((h_out - 1) * st_h - 2 * pd_h + dl_h * (k_h - 1) + 1)
    op_w = in_shape[2] - ((w_out - 1) * st_w - 2 * pd_w + dl_w * (k_w - 1) + 1)
    return F.conv_transpose2d(flat, w, None, p["stride"], p["padding"], (op_h, op_w), p["groups"],
                              p["dilation"])


def _dense_conv_matrix(graph: Graph, i: int) -> torch.Tensor | None:
    """The (out_numel, in_numel) matrix of Conv2d ``i`` (no bias) when it has at most
    ``CERTIFIED_CONV_MATRIX_ELEMENTS`` entries, else None; memoised on the graph."""
    key = ("dense", i)
    if key not in graph.cache:
        op = graph.ops[i]
        in_shape = graph.ops[op.args[0]].shape
        n_out, n_in = math.prod(op.shape), math.prod(in_shape)
        mat = None
        if n_out * n_in <= CERTIFIED_CONV_MATRIX_ELEMENTS:
            p = op.params
            w = p["weight"]
            if n_in <= n_out:  # the convolution of each input basis vector: the columns
                eye = torch.eye(n_in, dtype=w.dtype, device=w.device).reshape((n_in,) + in_shape)
                mat = F.conv2d(eye, w, None, p["stride"], p["padding"], p["dilation"],
                               p["groups"]).reshape(n_in, n_out).T
            else:  # the transposed convolution of each output basis vector: the rows
                eye = torch.eye(n_out, dtype=w.dtype, device=w.device).reshape((n_out,) + op.shape)
                mat = _conv_back(op, in_shape, eye).reshape(n_out, n_in)
        graph.cache[key] = mat
    return graph.cache[key]


def _backward(graph: Graph, out: int, spec: torch.Tensor, x: torch.Tensor, eps: float, norm: str,
              pre: dict[int, Interval], relax: dict[int, tuple[torch.Tensor, ...]] | None = None,
              bias: torch.Tensor | None = None, more: dict[int, torch.Tensor] | None = None
              ) -> torch.Tensor:
    """Lower bound of ``bias + spec · f_out(x')`` over the input set, shape (S, N).

    ``spec`` is (S, N, *shape_out), specification first: elementwise products with per-example
    tensors (N, ...) then broadcast over the outermost dimension, which is several times faster
    than over an inner one. ``bias`` is (S, N) or None. ``relax`` optionally gives each ReLU's
    relaxation (:func:`_relax` of its ``pre`` interval, one row per example) already computed.
    ``more`` gives coefficients of further operations (below ``out``) to start from as well.
    """
    ops = graph.ops
    s, n = spec.shape[:2]
    coef: dict[int, torch.Tensor] = {out: spec, **(more or {})}
    if bias is None:
        bias = torch.zeros((s, n), dtype=x.dtype, device=x.device)

    def push(j: int, a: torch.Tensor) -> None:
        coef[j] = coef[j] + a if j in coef else a

    for i in range(out, 0, -1):
        a = coef.pop(i, None)
        if a is None:
            continue
        op = ops[i]
        src = op.args[0]
        in_shape = ops[src].shape
        p = op.params
        if op.kind == "linear":
            if p["bias"] is not None:
                bias = bias + (a @ p["bias"]).reshape(s, n, -1).sum(-1)
            push(src, a @ p["weight"])
        elif op.kind == "conv":
            if p["bias"] is not None:
                bias = bias + (a.sum((-1, -2)) @ p["bias"])
            mat = _dense_conv_matrix(graph, i)
            if mat is not None:  # small layer: one matrix product beats conv_transpose2d
                push(src, (a.reshape(s, n, -1) @ mat).reshape((s, n) + in_shape))
            else:
                push(src, _conv_back(op, in_shape, a.reshape((s * n,) + op.shape)).reshape((s, n) + in_shape))
        elif op.kind == "scale_shift":
            sh = p["shift"]
            if sh.ndim or float(sh) != 0.0:
                bias = bias + (a * sh).reshape(s, n, -1).sum(-1)
            push(src, a * p["scale"])
        elif op.kind == "reshape":
            push(src, a.reshape((s, n) + in_shape))
        elif op.kind in ("avgpool", "adaptive_avgpool"):
            flat = a.reshape((s * n,) + op.shape)
            like = flat.new_zeros(()).expand((s * n,) + in_shape)
            if op.kind == "avgpool":
                kern, stride = p["kernel_size"], p["stride"]
                back = torch.ops.aten.avg_pool2d_backward(
                    flat, like, _pair(kern), _pair(stride if stride is not None else kern), _pair(p["padding"]),
                    p["ceil_mode"], p["count_include_pad"], p["divisor_override"])
            else:
                back = torch.ops.aten._adaptive_avg_pool2d_backward(flat, like.contiguous())
            push(src, back.reshape((s, n) + in_shape))
        elif op.kind == "add":
            c1, c2 = p["coef"]
            push(op.args[0], a if c1 == 1.0 else a * c1)
            push(op.args[1], a if c2 == 1.0 else a * c2)
        elif op.kind in ("relu", "leaky_relu"):
            if relax is not None and i in relax:
                low_slope, up_slope, up_icpt = relax[i]
            else:
                low_slope, up_slope, up_icpt = _relax(op, *pre[src])
            pos, neg = a.clamp(min=0), a.clamp(max=0)  # (torch.where would broadcast slowly)
            bias = bias + (neg * up_icpt).reshape(s, n, -1).sum(-1)
            push(src, pos * low_slope + neg * up_slope)
        else:  # pragma: no cover
            raise AssertionError(op.kind)
    a = coef.pop(0, None)
    if a is None:  # output independent of the input
        return bias
    a = a.reshape(s, n, -1)
    xf = x.reshape(1, n, -1)
    lo_box, hi_box = _input_box(xf, eps)
    mid, rad = (hi_box + lo_box) / 2, (hi_box - lo_box) / 2
    box = (a * mid).sum(-1) - (a.abs() * rad).sum(-1)
    if norm == "linf":
        return bias + box
    ball = (a * xf).sum(-1) - eps * a.norm(dim=-1)
    return bias + torch.maximum(box, ball)


# ----------------------------------------------------------------------------- patches
# A patch is the coefficient map of one backward row restricted to a window of a layer's grid.
# Geometry ``(kh, kw, sh, sw, ph, pw)``: the window of the row whose neuron sits at ``(i, j)`` of
# the starting layer covers rows ``i * sh - ph + [0, kh)`` and columns ``j * sw - pw + [0, kw)``
# of the layer's (C, H, W) grid; entries outside the grid are kept at zero.
Geometry = tuple[int, int, int, int, int, int]


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_geometry(op: Op, in_shape: tuple[int, ...]) -> dict[str, Any] | None:
    """Kernel, stride, padding and dilation of a Conv2d or of an average pooling written as a
    depthwise convolution (``None`` when the pooling is not one)."""
    p = op.params
    if op.kind == "conv":
        return {"kernel": tuple(p["weight"].shape[2:]), "stride": _pair(p["stride"]),
                "padding": _pair(p["padding"]), "dilation": _pair(p["dilation"])}
    if op.kind == "avgpool":
        kernel = _pair(p["kernel_size"])
        stride = _pair(p["stride"] if p["stride"] is not None else p["kernel_size"])
        padding = _pair(p["padding"])
        if p["divisor_override"] is None and not p["count_include_pad"] and padding != (0, 0):
            return None  # the divisor varies at the border
        for d in range(2):  # ceil_mode windows past the padding are not convolution windows
            if op.shape[1 + d] != (in_shape[1 + d] + 2 * padding[d] - kernel[d]) // stride[d] + 1:
                return None
        divisor = p["divisor_override"] or kernel[0] * kernel[1]
        return {"kernel": kernel, "stride": stride, "padding": padding, "dilation": (1, 1),
                "divisor": divisor}
    if op.kind == "adaptive_avgpool":
        (h, w), (oh, ow) = in_shape[1:], op.shape[1:]
        if h % oh or w % ow:
            return None
        kernel = (h // oh, w // ow)
        return {"kernel": kernel, "stride": kernel, "padding": (0, 0), "dilation": (1, 1),
                "divisor": kernel[0] * kernel[1]}
    return None


def _through_conv(g: Geometry, conv: dict[str, Any]) -> Geometry:
    kh, kw, sh, sw, ph, pw = g
    (k_h, k_w), (st_h, st_w) = conv["kernel"], conv["stride"]
    (pd_h, pd_w), (dl_h, dl_w) = conv["padding"], conv["dilation"]
    return ((kh - 1) * st_h + dl_h * (k_h - 1) + 1, (kw - 1) * st_w + dl_w * (k_w - 1) + 1,
            sh * st_h, sw * st_w, ph * st_h + pd_h, pw * st_w + pd_w)


def _merge_geometry(a: Geometry, b: Geometry) -> Geometry | None:
    if a[2:4] != b[2:4]:
        return None
    ph, pw = max(a[4], b[4]), max(a[5], b[5])
    end_h, end_w = max(a[0] - a[4], b[0] - b[4]), max(a[1] - a[5], b[1] - b[5])
    return (ph + end_h, pw + end_w, a[2], a[3], ph, pw)


def _patch_plan(graph: Graph, idx: int) -> dict[int, Geometry] | None:
    """Patch geometry of every operation between the input and ``idx`` (a (C, H, W) layer), or
    ``None`` when one of them is not convolution-like (Linear, a reshape that changes the shape,
    a pooling that is not a convolution, a layer that is not (C, H, W))."""
    ops = graph.ops
    if len(ops[idx].shape) != 3:
        return None
    plan: dict[int, Geometry] = {idx: (1, 1, 1, 1, 0, 0)}
    for i in range(idx, 0, -1):
        g = plan.get(i)
        if g is None:
            continue
        op = ops[i]
        if op.kind in ("relu", "leaky_relu", "scale_shift", "add"):
            srcs = [(a, g) for a in op.args]
        elif op.kind == "reshape" and ops[op.args[0]].shape == op.shape:
            srcs = [(op.args[0], g)]
        else:
            conv = _conv_geometry(op, ops[op.args[0]].shape)
            if conv is None:
                return None
            srcs = [(op.args[0], _through_conv(g, conv))]
        for src, gs in srcs:
            if len(ops[src].shape) != 3:
                return None
            merged = gs if src not in plan else _merge_geometry(plan[src], gs)
            if merged is None:
                return None
            plan[src] = merged
    return plan


def _patch_cut(graph: Graph, plan: dict[int, Geometry]) -> tuple[int, int]:
    """Where to switch from patches to dense coefficients, and the largest row then.

    Windows grow as the backward pass moves towards the input and can outgrow their layer
    (deep networks on small images). Operations ``>= cut`` are propagated as patches and the
    rest densely; ``cut`` minimises the coefficients one row holds over all layers of ``plan``
    (``cut`` above the starting operation: dense throughout, 0: patches throughout).
    """
    ops = graph.ops
    nodes = sorted(plan)
    patch = {j: ops[j].shape[0] * plan[j][0] * plan[j][1] for j in nodes}
    dense = {j: math.prod(ops[j].shape) for j in nodes}
    best, best_cost = nodes[-1] + 1, sum(dense.values())
    for k, cut in enumerate(nodes):
        cost = sum(dense[j] for j in nodes[:k]) + sum(patch[j] for j in nodes[k:])
        if cost < best_cost:
            best, best_cost = cut, cost
    per_row = max([patch[j] for j in nodes if j >= best] + [dense[j] for j in nodes if j < best])
    return (0 if best == nodes[0] else best), per_row


def _patch_to_dense(a: torch.Tensor, g: Geometry, shape: tuple[int, ...], li: torch.Tensor,
                    lj: torch.Tensor, origin: tuple[int, ...]) -> torch.Tensor:
    """Patches (2, R, C, kh, kw) placed at their rows' windows in (2, R, C, H, W) maps."""
    kh, kw, sh, sw, ph, pw = g
    h, w = shape[1:]
    bottom = max(0, (origin[1] - 1) * sh - ph + kh - h)
    right = max(0, (origin[2] - 1) * sw - pw + kw - w)
    r = li.numel()
    out = a.new_zeros((2, r, shape[0], h + ph + bottom, w + pw + right))
    ih = li[:, None] * sh + torch.arange(kh, device=li.device)
    iw = lj[:, None] * sw + torch.arange(kw, device=li.device)
    rows = torch.arange(r, device=li.device)
    out[:, rows[:, None, None], :, ih[:, :, None], iw[:, None, :]] = a.permute(1, 3, 4, 0, 2)
    return out[..., ph:ph + h, pw:pw + w]


def _gather(m: torch.Tensor, e: torch.Tensor | None, li: torch.Tensor, lj: torch.Tensor, g: Geometry,
            origin: tuple[int, ...]) -> torch.Tensor:
    """Windows ``(R, C, kh, kw)`` of the maps ``m`` (N, C, H, W) (example ``e`` of each row; the
    single map if ``e`` is None) at the rows' locations; zero outside the grid."""
    kh, kw, sh, sw, ph, pw = g
    h, w = m.shape[-2:]
    bottom = max(0, (origin[1] - 1) * sh - ph + kh - h)
    right = max(0, (origin[2] - 1) * sw - pw + kw - w)
    mp = F.pad(m, (pw, right, ph, bottom))
    ih = li[:, None] * sh + torch.arange(kh, device=m.device)
    iw = lj[:, None] * sw + torch.arange(kw, device=m.device)
    if e is None:
        e = torch.zeros_like(li)
    return mp[e[:, None, None], :, ih[:, :, None], iw[:, None, :]].permute(0, 3, 1, 2)


def _valid(g: Geometry, shape: tuple[int, ...], li: torch.Tensor, lj: torch.Tensor,
           dtype: torch.dtype) -> torch.Tensor:
    """(1, R, 1, kh, kw): 1 where a row's window lies inside the (C, H, W) grid, else 0."""
    kh, kw, sh, sw, ph, pw = g
    hp = li[:, None] * sh - ph + torch.arange(kh, device=li.device)
    wp = lj[:, None] * sw - pw + torch.arange(kw, device=li.device)
    ok = ((hp >= 0) & (hp < shape[1]))[:, :, None] & ((wp >= 0) & (wp < shape[2]))[:, None, :]
    return ok.to(dtype)[None, :, None]


def _elementwise_patch(t: torch.Tensor, shape: tuple[int, ...], li: torch.Tensor, lj: torch.Tensor,
                       g: Geometry, origin: tuple[int, ...]) -> torch.Tensor:
    """A constant broadcast against (C, H, W), as a factor of (2, R, C, kh, kw) patches."""
    full = torch.broadcast_to(t, shape)
    if t.ndim < 2 or (t.shape[-1] == 1 and t.shape[-2] == 1):  # per channel (or scalar)
        return full[:, :1, :1]
    return _gather(full[None], None, li, lj, g, origin)[None]


def _patch_conv_matrix(graph: Graph, i: int, g: Geometry, g_in: Geometry, weight: torch.Tensor,
                       conv: dict[str, Any], groups: int) -> torch.Tensor | None:
    """Matrix mapping a (C_out, kh, kw) window through the transpose of convolution ``i`` to
    its (C_in, kh', kw') window, when small (see :func:`_dense_conv_matrix`); memoised."""
    key = ("patch", i, g)
    if key not in graph.cache:
        c_out = graph.ops[i].shape[0]
        c_in = graph.ops[graph.ops[i].args[0]].shape[0]
        n_out, n_in = c_out * g[0] * g[1], c_in * g_in[0] * g_in[1]
        mat = None
        if n_out * n_in <= CERTIFIED_CONV_MATRIX_ELEMENTS:
            dd = {"dtype": weight.dtype, "device": weight.device}
            if n_in <= n_out:  # columns: the (unpadded) convolution of each input window basis vector
                eye = torch.eye(n_in, **dd).reshape(n_in, c_in, g_in[0], g_in[1])
                mat = F.conv2d(eye, weight, None, conv["stride"], 0, conv["dilation"],
                               groups).reshape(n_in, n_out).T
            else:
                eye = torch.eye(n_out, **dd).reshape(n_out, c_out, g[0], g[1])
                mat = F.conv_transpose2d(eye, weight, None, conv["stride"], 0, 0, groups,
                                         conv["dilation"]).reshape(n_out, n_in)
        graph.cache[key] = mat
    return graph.cache[key]


def _backward_patches(graph: Graph, idx: int, plan: dict[int, Geometry], cut: int, e: torch.Tensor,
                      neuron: torch.Tensor, x: torch.Tensor, eps: float, norm: str,
                      relu_maps: dict[int, tuple[torch.Tensor, ...]]) -> torch.Tensor:
    """:func:`_backward` for the rows ``(e, neuron)`` of the identity specification of the
    (C, H, W) operation ``idx`` (row ``r`` bounds ``+z`` and ``-z`` of neuron ``neuron[r]`` of
    example ``e[r]``), with patch coefficients (2, R, C, kh, kw); returns the lower bounds (2, R)."""
    ops = graph.ops
    origin = ops[idx].shape
    c_out, h, w = origin
    r = e.numel()
    chan, li, lj = neuron // (h * w), (neuron % (h * w)) // w, neuron % w
    rows = torch.arange(r, device=x.device)
    start = torch.zeros((2, r, c_out, 1, 1), dtype=x.dtype, device=x.device)
    start[0, rows, chan] = 1.0
    start[1, rows, chan] = -1.0
    coef: dict[int, torch.Tensor] = {idx: start}
    bias = torch.zeros((2, r), dtype=x.dtype, device=x.device)

    def push(j: int, a: torch.Tensor, g: Geometry, spread: bool) -> None:
        target = plan[j]
        if g != target:
            top, left = target[4] - g[4], target[5] - g[5]
            a = F.pad(a, (left, target[1] - g[1] - left, top, target[0] - g[0] - top))
        # a convolution's window can reach into the zero padding: drop those entries (a ReLU
        # does it anyway, its relaxation windows being zero there)
        if spread and ops[j].kind not in ("relu", "leaky_relu"):
            a = a * _valid(target, ops[j].shape, li, lj, a.dtype)
        coef[j] = coef[j] + a if j in coef else a

    for i in range(idx, max(cut, 1) - 1, -1):
        a = coef.pop(i, None)
        if a is None:
            continue
        op, g = ops[i], plan[i]
        src, p = op.args[0], op.params
        if op.kind in ("relu", "leaky_relu"):
            low, up, icpt = (_gather(mp, e, li, lj, g, origin)[None] for mp in relu_maps[i])
            pos, neg = a.clamp(min=0), a.clamp(max=0)
            bias = bias + (neg * icpt).sum((-3, -2, -1))
            push(src, pos * low + neg * up, g, False)
        elif op.kind == "scale_shift":
            sh = p["shift"]
            if sh.ndim or float(sh) != 0.0:
                bias = bias + (a * _elementwise_patch(sh, op.shape, li, lj, g, origin)).sum((-3, -2, -1))
            push(src, a * _elementwise_patch(p["scale"], op.shape, li, lj, g, origin), g, False)
        elif op.kind == "reshape":
            push(src, a, g, False)
        elif op.kind == "add":
            c1, c2 = p["coef"]
            push(op.args[0], a if c1 == 1.0 else a * c1, g, False)
            push(op.args[1], a if c2 == 1.0 else a * c2, g, False)
        else:
            conv = _conv_geometry(op, ops[src].shape)
            c_in = ops[src].shape[0]
            if op.kind == "conv":
                weight, groups = p["weight"], p["groups"]
                if p["bias"] is not None:
                    bias = bias + a.sum((-1, -2)) @ p["bias"]
            else:
                weight = x.new_full((c_in, 1) + conv["kernel"], 1.0 / conv["divisor"])
                groups = c_in
            g_in = _through_conv(g, conv)
            mat = _patch_conv_matrix(graph, i, g, g_in, weight, conv, groups)
            if i == idx and mat is not None:  # the identity rows select rows of the matrix
                back = mat[chan].reshape((1, r, c_in) + g_in[:2])
                back = torch.cat([back, -back])
            elif mat is not None:  # small windows: one matrix product beats conv_transpose2d
                back = (a.reshape(2, r, -1) @ mat).reshape((2, r, c_in) + g_in[:2])
            else:
                flat = a.reshape((2 * r,) + a.shape[2:])
                back = F.conv_transpose2d(flat, weight, None, conv["stride"], 0, 0, groups,
                                          conv["dilation"]).reshape((2, r, c_in) + g_in[:2])
            push(src, back, g_in, True)
    if cut > 0 and coef:  # the rest densely, from the windows placed in full maps
        dense = {j: _patch_to_dense(a, plan[j], ops[j].shape, li, lj, origin) for j, a in coef.items()}
        relax_rows = {k: tuple(t[e] for t in maps) for k, maps in relu_maps.items() if k < cut}
        top = max(dense)
        return _backward(graph, top, dense.pop(top), x[e], eps, norm, {}, relax_rows, bias, dense)
    a = coef.pop(0, None)
    if a is None:
        return bias
    lo_box, hi_box = _input_box(x, eps)
    g = plan[0]
    lo_p = _gather(lo_box, e, li, lj, g, origin)[None]
    hi_p = _gather(hi_box, e, li, lj, g, origin)[None]
    mid, rad = (hi_p + lo_p) / 2, (hi_p - lo_p) / 2
    box = (a * mid).sum((-3, -2, -1)) - (a.abs() * rad).sum((-3, -2, -1))
    if norm == "linf":
        return bias + box
    xp = _gather(x, e, li, lj, g, origin)[None]
    ball = (a * xp).sum((-3, -2, -1)) - eps * a.flatten(2).norm(dim=-1)
    return bias + torch.maximum(box, ball)
