"""Trace a model with ``torch.fx`` into the flat list of operations bound propagation works on.

Every operation is one of a few kinds, each either *affine* in its inputs or an elementwise
piecewise-linear activation:

- ``input``        the model's single tensor input
- ``linear``       ``nn.Linear`` (weight ``W``, bias ``b``; acts on the last dimension)
- ``conv``         ``nn.Conv2d`` with integer zero padding
- ``scale_shift``  elementwise ``x * scale + shift`` (BatchNorm in eval mode, robustlab's
                   ``Normalize``, adding/subtracting/multiplying/dividing by a constant)
- ``avgpool``      ``nn.AvgPool2d`` / ``F.avg_pool2d``; ``adaptive_avgpool``: ``nn.AdaptiveAvgPool2d``
- ``reshape``      ``nn.Flatten``, ``torch.flatten``, ``view``/``reshape`` keeping the batch dimension
- ``add``          ``a + b`` / ``a - b`` of two traced tensors (residual connections)
- ``relu``, ``leaky_relu`` (negative slope in [0, 1])
- ``batchnorm``    only with ``differentiable=True``: a BatchNorm that normalises with the
                   statistics of the batch (training mode, or no running statistics); the
                   bounds code turns it into ``scale_shift`` with the clean batch's statistics

Parameters are copied to the dtype and device of the inputs, so the model itself is never
touched (with ``differentiable=True`` the copies stay attached to the autograd graph, so
gradients reach the parameters). Anything else raises one error naming the layer or function.
"""

from __future__ import annotations

import functools
import operator
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from robustlab._checks import fail
from robustlab._model_state import eval_mode
from robustlab.models.layers import Normalize

__all__ = ["Graph", "Op", "trace"]

SUPPORTED_TEXT = (
    "a torch.fx-traceable model built from Linear, Conv2d, ReLU, LeakyReLU, BatchNorm1d/2d, "
    "Flatten, AvgPool2d, AdaptiveAvgPool2d, Normalize, Identity, Dropout and additions"
)


@dataclass
class Op:
    """One operation: its kind, the indices of its traced inputs, its per-example output shape."""

    kind: str
    args: tuple[int, ...]
    shape: tuple[int, ...]
    params: dict[str, Any] = field(default_factory=dict)
    name: str = ""


@dataclass
class Graph:
    """Operations in topological order; ``ops[0]`` is the input, ``ops[output]`` the logits."""

    ops: list[Op]
    output: int
    #: per-call memo of derived tensors (convolution matrices), filled by the bounds code
    cache: dict[Any, Any] = field(default_factory=dict)


class _Tracer(fx.Tracer):
    """Standard tracer that also keeps robustlab's ``Normalize`` as one leaf."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, Normalize) or super().is_leaf_module(m, qualname)


@dataclass(frozen=True)
class _Copy:
    """Copy a model tensor to the bounds' dtype/device; detached unless ``differentiable``."""

    dtype: torch.dtype
    device: torch.device
    differentiable: bool

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        t = t if self.differentiable else t.detach()
        return t.to(dtype=self.dtype, device=self.device)


def _unsupported(what: str) -> None:
    fail("model", SUPPORTED_TEXT, f"a model with the unsupported {what}", describe_got=False)


def _elementwise_shape(scale: torch.Tensor, ndim: int) -> torch.Tensor:
    """Channel vector ``(C,)`` -> ``(C, 1, ..., 1)`` for a per-example tensor with ``ndim`` dims."""
    return scale.reshape((-1,) + (1,) * (ndim - 1))


# torch.fx tracing and shape propagation cost milliseconds per call, as much as IBP itself on a
# small network, and certified training bounds the same model at every step: the traced fx graph
# (with its shapes) is kept per model and input shape, and reused while the model's fingerprint
# (its modules, their types, modes and plain attributes, the identity and shape of every
# parameter and buffer) is unchanged. Parameter *values* are read afresh on every call, so
# training or loading weights in place never leaves a stale copy.
_TRACES: weakref.WeakKeyDictionary[nn.Module, tuple[Any, dict[tuple[int, ...], Any]]] = (
    weakref.WeakKeyDictionary())
_FREEZE_DEPTH = 4
_FREEZE_ITEMS = 64


@functools.cache
def _module_internals() -> frozenset[str]:
    return frozenset(vars(nn.Module())) - {"training"}


def _freeze(v: Any, depth: int = 0) -> Any:
    """A hashable snapshot of a module attribute (contents for small containers)."""
    if v is None or isinstance(v, (bool, int, float, complex, str, bytes, torch.dtype, torch.device)):
        return v
    if isinstance(v, torch.Tensor):
        return ("tensor", id(v), tuple(v.shape), v.dtype, str(v.device))
    if isinstance(v, (tuple, list, dict, set, frozenset)) and depth < _FREEZE_DEPTH and len(v) <= _FREEZE_ITEMS:
        items = sorted(v.items(), key=lambda kv: repr(kv[0])) if isinstance(v, dict) else (
            sorted(v, key=repr) if isinstance(v, (set, frozenset)) else v)
        return (type(v).__name__, tuple(_freeze(i, depth + 1) for i in items))
    return ("object", type(v), id(v))


def _fingerprint(model: nn.Module) -> tuple:
    skip = _module_internals()
    parts = []
    for name, m in model.named_modules(remove_duplicate=False):
        attrs = tuple((k, _freeze(v)) for k, v in vars(m).items() if k not in skip)
        tensors = tuple((k, _freeze(t)) for k, t in list(m._parameters.items()) + list(m._buffers.items()))
        parts.append((name, id(m), type(m), attrs, tensors))
    return tuple(parts)


def _traced(model: nn.Module, shape: tuple[int, ...]) -> tuple[fx.GraphModule, fx.Graph]:
    """The fx graph of ``model`` with shapes propagated for inputs ``(N, *shape)`` (memoised)."""
    fp = _fingerprint(model)
    cached = _TRACES.get(model)
    if cached is not None and cached[0] == fp and shape in cached[1]:
        return cached[1][shape]
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - torch.fx raises many kinds of errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fail("model", "traceable by torch.fx (no data-dependent control flow)",
             f"a model whose tracing failed: {first}", describe_got=False)
    gm = fx.GraphModule(model, graph)
    # shapes only: the probe runs in the model's own dtype/device (the bounds use x's)
    ref = next((t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()), None)
    probe = torch.zeros((2,) + shape, dtype=torch.float32 if ref is None else ref.dtype,
                        device="cpu" if ref is None else ref.device)
    # eval mode: a training-mode BatchNorm would update its running statistics and Dropout
    # would draw from the global RNG; the shapes are the same in both modes
    with torch.no_grad(), eval_mode(model):
        ShapeProp(gm).propagate(probe)
    entries = cached[1] if cached is not None and cached[0] == fp else {}
    entries[shape] = (gm, graph)
    _TRACES[model] = (fp, entries)
    return gm, graph


def trace(model: nn.Module, x: torch.Tensor, *, differentiable: bool = False) -> Graph:
    """Trace ``model`` on inputs shaped like ``x``; see the module docstring.

    With ``differentiable=False`` (the model is in eval mode) parameters are detached. With
    ``differentiable=True`` the model's current modes are read: a BatchNorm using batch
    statistics becomes a ``batchnorm`` op and a Dropout in training mode (``p > 0``) is rejected.
    """
    gm, graph = _traced(model, tuple(x.shape[1:]))
    dd = {"dtype": x.dtype, "device": x.device}

    param = _Copy(x.dtype, x.device, differentiable)

    ops: list[Op] = []
    index: dict[fx.Node, int] = {}
    consts: dict[fx.Node, Any] = {}
    output = -1

    def shape_of(node: fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape") or len(meta.shape) == 0 or meta.shape[0] != 2:
            _unsupported(f"operation '{node.target}' (its output is not a batched tensor)")
        return tuple(int(s) for s in meta.shape[1:])

    def add(kind: str, args: tuple[int, ...], node: fx.Node, **params: Any) -> None:
        index[node] = len(ops)
        ops.append(Op(kind, args, shape_of(node), params, str(node.target)))

    def const_value(a: Any) -> torch.Tensor | None:
        if isinstance(a, fx.Node):
            if a in consts:
                return consts[a]
            return None
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            return torch.tensor(float(a), **dd)
        return None

    def per_example(c: torch.Tensor, node: fx.Node) -> torch.Tensor:
        # a constant broadcast against (N, *shape): drop a leading batch dimension of size 1
        full = len(shape_of(node)) + 1
        if c.ndim == full:
            if c.shape[0] != 1:
                _unsupported(f"constant of shape {tuple(c.shape)} in '{node.target}'")
            c = c[0]
        return c

    for node in graph.nodes:
        op, target = node.op, node.target
        if op == "placeholder":
            if ops:
                _unsupported("second input (bounds need a model with one tensor input)")
            add("input", (), node)
        elif op == "get_attr":
            value = gm
            for part in str(target).split("."):
                value = getattr(value, part)
            if not isinstance(value, torch.Tensor):
                _unsupported(f"attribute '{target}'")
            consts[node] = param(value)
        elif op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node) or out not in index:
                _unsupported("output (bounds need a model returning one logits tensor)")
            output = index[out]
        elif op == "call_module":
            m = gm.get_submodule(str(target))
            src = node.args[0] if node.args else None
            if not isinstance(src, fx.Node) or src not in index or len(node.args) != 1 or node.kwargs:
                _unsupported(f"call of layer '{target}' ({type(m).__name__}) on several or constant inputs")
            a = (index[src],)
            _module_op(m, node, a, add, param)
        elif op in ("call_function", "call_method"):
            _function_op(node, index, add, const_value, per_example, dd)
        else:  # pragma: no cover - fx has no other node kinds
            _unsupported(f"fx node kind '{op}'")
    if output < 0:
        _unsupported("output")
    return Graph(ops, output)


def _module_op(m: nn.Module, node: fx.Node, a: tuple[int, ...], add: Any, param: _Copy) -> None:
    name = f"layer {type(m).__name__} ('{node.target}')"
    differentiable = param.differentiable
    if isinstance(m, nn.Linear):
        b = param(m.bias) if m.bias is not None else None
        add("linear", a, node, weight=param(m.weight), bias=b)
    elif isinstance(m, nn.Conv2d):
        if isinstance(m.padding, str) or m.padding_mode != "zeros":
            _unsupported(f"{name} with padding={m.padding!r}, padding_mode={m.padding_mode!r}")
        b = param(m.bias) if m.bias is not None else None
        add("conv", a, node, weight=param(m.weight), bias=b, stride=m.stride,
            padding=m.padding, dilation=m.dilation, groups=m.groups)
    elif isinstance(m, (nn.ReLU,)):
        add("relu", a, node)
    elif isinstance(m, nn.LeakyReLU):
        _leaky(float(m.negative_slope), a, node, add, name)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        batch_stats = m.training or m.running_mean is None or m.running_var is None
        ndim = len(node.meta["tensor_meta"].shape) - 1
        if batch_stats and differentiable:
            add("batchnorm", a, node, weight=None if m.weight is None else param(m.weight),
                bias=None if m.bias is None else param(m.bias), eps=float(m.eps), layer=name)
            return
        if batch_stats:
            _unsupported(f"{name} without running statistics (track_running_stats=False)")
        var = m.running_var.detach().to(dtype=param.dtype, device=param.device)
        mean = m.running_mean.detach().to(dtype=param.dtype, device=param.device)
        scale = 1.0 / torch.sqrt(var + m.eps)
        if m.weight is not None:
            scale = scale * param(m.weight)
        shift = -mean * scale
        if m.bias is not None:
            shift = shift + param(m.bias)
        add("scale_shift", a, node, scale=_elementwise_shape(scale, ndim),
            shift=_elementwise_shape(shift, ndim))
    elif isinstance(m, Normalize):
        std = param(m.std)
        mean = param(m.mean)
        add("scale_shift", a, node, scale=1.0 / std, shift=-mean / std)
    elif isinstance(m, nn.Dropout) and m.training and m.p > 0 and differentiable:
        fail("model", "a model without Dropout in training mode (its output is random; "
             "call .eval() on the Dropout layers to bound the deterministic network)",
             f"a model with {name} in training mode (p={m.p})", describe_got=False)
    elif isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout)):
        add("reshape", a, node)
    elif isinstance(m, nn.AvgPool2d):
        add("avgpool", a, node, kernel_size=m.kernel_size, stride=m.stride, padding=m.padding,
            ceil_mode=m.ceil_mode, count_include_pad=m.count_include_pad,
            divisor_override=m.divisor_override)
    elif isinstance(m, nn.AdaptiveAvgPool2d):
        add("adaptive_avgpool", a, node, output_size=m.output_size)
    else:
        _unsupported(name)


def _leaky(slope: float, a: tuple[int, ...], node: fx.Node, add: Any, name: str) -> None:
    if not 0.0 <= slope <= 1.0:
        _unsupported(f"{name} with negative_slope={slope} (bounds need a slope in [0, 1])")
    add("leaky_relu", a, node, slope=slope)


_ADD = {operator.add, torch.add, operator.iadd}
_SUB = {operator.sub, torch.sub, operator.isub}
_MUL = {operator.mul, torch.mul, operator.imul}
_DIV = {operator.truediv, torch.div, operator.itruediv}
_RELU = {F.relu, torch.relu}
_FLATTEN = {torch.flatten}


def _function_op(node: fx.Node, index: dict, add: Any, const_value: Any, per_example: Any,
                 dd: dict) -> None:
    target, args = node.target, node.args
    is_method = node.op == "call_method"
    if not isinstance(node.meta.get("tensor_meta"), torch.fx.passes.shape_prop.TensorMetadata):
        # a non-tensor value such as x.size(0) or x.shape: not a bounded quantity; operations
        # that use it as an operand find it neither traced nor constant and are rejected
        return
    label = f"method '.{target}()'" if is_method else f"function '{getattr(target, '__name__', target)}'"
    traced = [i for i, v in enumerate(args) if isinstance(v, fx.Node) and v in index]
    if not traced:
        _unsupported(f"{label} on constants only")
    first = args[0]

    def arith(kind: str) -> None:
        if len(args) != 2 or (node.kwargs and set(node.kwargs) - {"alpha"}) or node.kwargs.get("alpha", 1) != 1:
            _unsupported(f"{label} with arguments {args}, {node.kwargs}")
        if len(traced) == 2:
            if kind not in ("add", "sub"):
                _unsupported(f"{label} of two traced tensors (not affine)")
            add("add", (index[args[0]], index[args[1]]), node, coef=(1.0, 1.0 if kind == "add" else -1.0))
            return
        t = traced[0]
        c = const_value(args[1 - t])
        if c is None:
            _unsupported(f"{label} with a non-constant argument")
        c = per_example(c, node)
        one = torch.ones((), **dd)
        if kind == "add":
            scale, shift = one, c
        elif kind == "sub":
            scale, shift = (one, -c) if t == 0 else (-one, c)
        elif kind == "mul":
            scale, shift = c, torch.zeros((), **dd)
        else:
            if t != 0:
                _unsupported(f"{label} of a constant by a traced tensor (not affine)")
            if bool((c == 0).any()):
                _unsupported(f"{label} by zero")
            scale, shift = 1.0 / c, torch.zeros((), **dd)
        add("scale_shift", (index[args[t]],), node, scale=scale, shift=shift)

    if not is_method and target in _ADD or is_method and target in ("add", "__add__"):
        arith("add")
    elif not is_method and target in _SUB or is_method and target in ("sub", "__sub__"):
        arith("sub")
    elif not is_method and target in _MUL or is_method and target in ("mul", "__mul__"):
        arith("mul")
    elif not is_method and target in _DIV or is_method and target in ("div", "__truediv__"):
        arith("div")
    elif (not is_method and target in _RELU) or (is_method and target == "relu"):
        if node.kwargs.get("inplace", False) not in (False, True) or len(args) != 1 and not (
                len(args) == 2 and isinstance(args[1], bool)):
            _unsupported(f"{label} with arguments {args}")
        add("relu", (index[first],), node)
    elif not is_method and target is F.leaky_relu:
        slope = args[1] if len(args) > 1 else node.kwargs.get("negative_slope", 0.01)
        _leaky(float(slope), (index[first],), node, add, label)
    elif (not is_method and target in _FLATTEN) or (is_method and target in ("flatten", "view", "reshape")):
        if traced != [0]:
            _unsupported(f"{label} with traced shape arguments")
        add("reshape", (index[first],), node)
    elif not is_method and target is F.avg_pool2d:
        names = ["kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"]
        kw = dict(zip(names, args[1:]))
        kw.update(node.kwargs)
        kernel = kw["kernel_size"]
        add("avgpool", (index[first],), node, kernel_size=kernel, stride=kw.get("stride") or kernel,
            padding=kw.get("padding", 0), ceil_mode=kw.get("ceil_mode", False),
            count_include_pad=kw.get("count_include_pad", True),
            divisor_override=kw.get("divisor_override"))
    elif not is_method and target is F.adaptive_avg_pool2d:
        add("adaptive_avgpool", (index[first],), node,
            output_size=args[1] if len(args) > 1 else node.kwargs["output_size"])
    else:
        _unsupported(label)
