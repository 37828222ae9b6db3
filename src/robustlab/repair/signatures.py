"""Robust weight signatures: robustness as a weight patch (Cai, Zhang & Wang, ICML 2023).

A model fine-tuned on a corruption differs from the clean model it started from mostly in its
shallow layers (the paper's observation (i)). The difference on those layers, the *robust
weight signature* (RWS), is stored on its own (optionally quantised), added to a clean model to
patch in the robustness, re-scaled to trade clean for corrupted accuracy, composed with other
signatures, and taken off again to restore the clean model (the paper's properties (1)-(3)):

    theta_patched = theta_clean + sum_i s_i * RWS_i,     RWS = theta_tuned - theta_clean  (layers L)

What is a *layer* here: a module that owns parameters directly (a ``Conv2d``/``Linear`` with its
weight and bias, a ``BatchNorm``'s affine weight and bias), in the order the model declares its
parameters (input side first, so "shallow" means early in that order). A signature holds the
differences of the parameters of its layers. Buffers (BatchNorm running statistics) are left out
by default, as in the reference, whose layer lists hold weights and BatchNorm affine parameters
only (VITA-Group/Robust_Weight_Signatures, ``tools.py::select_layers``); ``include_buffers=True``
adds the chosen layers' running statistics (see :func:`extract_signature`). The normalisation
layer's mean/std are never part of a signature.

Exact removal. ``(w + s * d) - s * d`` is not ``w`` in floating point. :func:`apply_signature`
therefore returns a new model that carries an *undo record* (``model.robustlab_patches``, a
:class:`PatchLog`): for every application, the exact original values of the tensors it touched
and a SHA-256 of the values it wrote. :func:`remove_signature` finds the application in the record,
checks that the touched tensors still hold exactly what was written (nothing edited them since),
restores the stored originals and re-applies, in their order, the applications that came after
it. The result is bit for bit the model those later applications alone would have produced
(in particular, apply then remove gives back the original weights bit for bit, for quantised
signatures too). Without a usable record (a model loaded from a file that has none, weights
edited after patching, or a different scale) removal falls back to arithmetic,
``w - s * d`` computed in float64 and rounded once, which is within a rounding step of the
original (and warns). The CLI writes the record next to a patched model folder
(:data:`~robustlab._constants.RWS_PATCH_LOG_FILENAME`), so ``robustlab repair signature remove``
is exact too.

Quantisation (:func:`quantize_signature`): symmetric, per output channel for tensors with two or
more dimensions (one scale per row of a ``Linear`` weight / per filter of a convolution), per
tensor for vectors (biases, BatchNorm parameters): ``q = round(d / step)`` clamped to
``[-(2^(b-1) - 1), 2^(b-1) - 1]`` with ``step = max|d| / (2^(b-1) - 1)``; stored as int8, or, for
4 bits, two values packed per byte (so :attr:`Signature.num_bytes` is the real size); steps are
float32. The reference uses per-tensor asymmetric min-max levels instead
(``quantize_utils/func.py::linear_quant``); the symmetric per-channel scheme keeps zero exact
(an untouched weight stays untouched) and loses less on layers whose filters differ in scale.

Deviation: the reference additionally projects each signature off the direction of the base
model's own fine-tuning (``tools.py::get_projection``) to transfer signatures between models
trained from one pre-trained checkpoint; that needs the pre-trained model as a third input and
is not implemented here. Signatures are applied as extracted.

References
----------
Ruisi Cai, Zhenyu Zhang, Zhangyang Wang. "Robust Weight Signatures: Gaining Robustness as Easy
as Patching Weights?" ICML 2023, arXiv:2302.12480. Reference code:
github.com/VITA-Group/Robust_Weight_Signatures (``model_patching.py``, ``tools.py``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import numbers
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robustlab._checks import (
    check_bool,
    check_inputs,
    check_int,
    check_labels,
    check_number,
    describe,
    fail,
)
from robustlab._constants import (
    RWS_BITS,
    RWS_CURVE_SCALES,
    RWS_DEFAULT_LAYER_FRACTION,
    RWS_FORMAT,
    RWS_FORMAT_VERSION,
)
from robustlab.errors import (
    CheckpointError,
    InvalidTypeError,
    ShapeError,
)

__all__ = [
    "PatchLog",
    "Signature",
    "SignatureCurve",
    "apply_signature",
    "apply_signatures",
    "extract_signature",
    "layer_changes",
    "load_patch_log",
    "load_signature",
    "quantize_signature",
    "remove_signature",
    "save_patch_log",
    "save_signature",
    "signature_scale_curve",
]

#: Attribute of a patched model holding its :class:`PatchLog`.
PATCH_ATTR = "robustlab_patches"


# ----------------------------------------------------------------------------------- types
@dataclass(frozen=True, eq=False)
class Signature:
    """A robust weight signature: per-parameter weight differences on a few layers.

    Attributes
    ----------
    params : tuple of str
        Tensor names (state-dict keys) the signature changes, in the model's order: parameters,
        and with ``include_buffers`` BatchNorm running statistics.
    layers : tuple of str
        The layers (modules) those parameters belong to, in the model's order.
    shapes : tuple of tuple of int
        Shape of each parameter.
    dtypes : tuple of str
        Dtype of each parameter in the base model (``"float32"``, ...).
    bits : int or None
        None: ``data`` holds the differences in the parameters' dtype. 8 or 4: ``data`` holds
        int8 (8 bits) or packed uint8 (4 bits, two per byte) codes and ``steps`` the float32
        quantisation steps.
    data : dict of str to Tensor
        Stored values per parameter (CPU).
    steps : dict of str to Tensor
        Quantisation step per output channel (or one per tensor); empty when ``bits`` is None.
    architecture : str
        Fingerprint of the base model's architecture (state-dict names and shapes).
    full_copy_bytes : int
        Bytes of a full copy of the base model's floating-point state (parameters and buffers),
        the baseline of :attr:`compression_ratio`.
    relative_change : dict of str to float
        ``||theta_tuned - theta_base|| / ||theta_base||`` of every layer of the model at
        extraction (the quantity ``layers="auto"`` ranks by).
    name : str or None
        The corruption (or any label) the signature carries robustness against.
    """

    params: tuple[str, ...]
    layers: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    bits: int | None
    data: Mapping[str, torch.Tensor]
    steps: Mapping[str, torch.Tensor]
    architecture: str
    full_copy_bytes: int
    relative_change: Mapping[str, float] = field(default_factory=dict)
    name: str | None = None

    @property
    def num_bytes(self) -> int:
        """Bytes of the stored tensors (codes and steps); metadata text not counted."""
        return sum(_nbytes(t) for t in self.data.values()) + sum(_nbytes(t) for t in self.steps.values())

    @property
    def compression_ratio(self) -> float:
        """``full_copy_bytes / num_bytes``: how many times smaller than a full weight copy."""
        return self.full_copy_bytes / max(self.num_bytes, 1)

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the signature's content: parameters, shapes, bits and stored bytes."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            h = hashlib.sha256()
            h.update(json.dumps([self.params, self.shapes, self.dtypes, self.bits, self.architecture]).encode())
            for p in self.params:
                h.update(_tensor_bytes(self.data[p]))
                if p in self.steps:
                    h.update(_tensor_bytes(self.steps[p]))
            cached = h.hexdigest()
            object.__setattr__(self, "_fingerprint", cached)
        return cached

    def deltas(self) -> dict[str, torch.Tensor]:
        """The weight differences per parameter, dequantised, float32 (or the stored float dtype)."""
        if self.bits is None:
            return {p: self.data[p] for p in self.params}
        return {p: _dequantize(self.data[p], self.steps[p], self.bits, shape)
                for p, shape in zip(self.params, self.shapes)}

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        kind = "float" if self.bits is None else f"int{self.bits}"
        return (f"Signature({label.strip() or 'unnamed'}, {len(self.layers)} layers, {kind}, "
                f"{self.num_bytes} bytes, {self.compression_ratio:.1f}x smaller than a full copy)")


@dataclass(frozen=True)
class SignatureCurve:
    """Accuracy of ``base + scale * signature`` over scales (clean and corrupted inputs).

    ``scales[i]``, ``clean_accuracy[i]`` and ``corrupted_accuracy[i]`` go together;
    ``corrupted_accuracy`` is None when no corrupted inputs were given.
    """

    scales: tuple[float, ...]
    clean_accuracy: tuple[float, ...]
    corrupted_accuracy: tuple[float, ...] | None
    num_bytes: int
    full_copy_bytes: int


@dataclass
class _Entry:
    """One application: its (signature, scale) pairs, originals of what it touched, hashes written."""

    pairs: list[tuple[Signature, float]]
    originals: dict[str, torch.Tensor]
    written: dict[str, str]


@dataclass
class PatchLog:
    """The undo record a patched model carries (``model.robustlab_patches``), oldest first."""

    entries: list[_Entry] = field(default_factory=list)

    def applied(self) -> list[tuple[str | None, float]]:
        """``(signature name, scale)`` of every application still on the model, oldest first."""
        return [(sig.name, scale) for entry in self.entries for sig, scale in entry.pairs]

    def __deepcopy__(self, memo: dict[int, Any]) -> PatchLog:
        # Signatures are immutable and tensors in the record are never written: share them.
        return PatchLog([_Entry(list(e.pairs), dict(e.originals), dict(e.written)) for e in self.entries])


# ----------------------------------------------------------------------------------- extract
def layer_changes(base: nn.Module, tuned: nn.Module) -> dict[str, float]:
    """Relative change ``||theta_tuned - theta_base||_2 / ||theta_base||_2`` of every layer.

    Layers are the modules owning parameters, in the model's order; the norm runs over all their
    parameters together. A layer whose base weights are all zero gets ``inf`` if it changed,
    else 0. Raises if the two models' architectures differ.
    """
    _check_module("base", base)
    _check_module("tuned", tuned)
    _check_same_architecture(base, tuned)
    return _layer_changes(_params(base), _params(tuned), _layer_map(base))


def extract_signature(
    base: nn.Module,
    tuned: nn.Module,
    *,
    layers: str | Sequence[str] = "auto",
    num_layers: int | None = None,
    bits: int | None = None,
    name: str | None = None,
    include_buffers: bool = False,
) -> Signature:
    """Extract the robust weight signature ``tuned - base`` on chosen layers.

    Parameters
    ----------
    base : nn.Module
        The clean model.
    tuned : nn.Module
        The same architecture fine-tuned (from ``base``) on corrupted data.
    layers : "auto", "shallow" or sequence of str, default "auto"
        ``"auto"``: among the shallow half of the layers (the first ``ceil(L / 2)`` of ``L``, or
        the first ``num_layers`` if more), the ``num_layers`` with the largest relative change
        ``||theta_tuned - theta_base|| / ||theta_base||`` (ties go to the shallower layer).
        ``"shallow"``: the first ``num_layers`` layers, the reference's rule
        (``tools.py::select_layers``). Or layer names (``"features.0"``) or parameter names
        (``"features.0.weight"``).
    num_layers : int, optional
        How many layers ``"auto"``/``"shallow"`` keep. Default: half the model's layers, rounded
        up (:data:`~robustlab._constants.RWS_DEFAULT_LAYER_FRACTION`; the reference keeps 7 of
        VGG-16's 13 convolutions), so by default ``"auto"`` and ``"shallow"`` agree and differ
        when fewer layers are asked for. Not allowed with explicit names.
    bits : {None, 8, 4}, default None
        Quantise the signature (see :func:`quantize_signature`); None keeps the float
        differences, exactly.
    name : str, optional
        The corruption the fine-tune was on (stored with the signature).
    include_buffers : bool, default False
        Also carry the chosen layers' floating-point buffers (BatchNorm ``running_mean`` and
        ``running_var``). Off by default, as in the reference, which leaves running statistics
        out of its signatures and re-estimates them on corrupted data
        (``tools.py::bn_update``). A fine-tune with BatchNorm in training mode moves the running
        statistics to the corrupted data's; without them the signature cannot carry that part.
        Applied with a scale in [0, 1] the running variance is the reference's interpolation
        ``(1 - s) var_base + s var_tuned``; a scale that would make a variance non-positive is
        refused.

    Returns
    -------
    Signature

    Notes
    -----
    Why ``"auto"`` ranks only the shallow half: the paper finds the signature in the shallow
    layers (observation (i)), and the relative change of deep layers (the classifier above all) is
    large after any fine-tune without carrying the robustness. On digits (MLP 64-64, contrast
    severity 5, ``tests/repair/test_repair_signatures.py``) ranking all layers picks the second
    hidden layer and the classifier and the patched model stays at 19 % corrupted accuracy;
    the two shallowest layers take it from 16 % to 91 %.

    Raises
    ------
    InvalidParameterError
        Architectures differ (parameter names or shapes), an unknown layer name, a bad
        ``num_layers`` or ``bits``.

    Examples
    --------
    >>> from robustlab.models import build_model
    >>> base = build_model("mlp", (1, 8, 8), 10, seed=0)
    >>> tuned = build_model("mlp", (1, 8, 8), 10, seed=1)  # stands in for a fine-tune of base
    >>> sig = extract_signature(base, tuned, bits=4, name="fog")
    >>> sig.layers, sig.num_bytes < sig.full_copy_bytes / 7
    (('hidden.0', 'hidden.2'), True)
    >>> patched = apply_signature(base, sig, scale=0.5)
    >>> restored = remove_signature(patched, sig, scale=0.5)
    >>> all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), restored.state_dict().values()))
    True
    """
    _check_module("base", base)
    _check_module("tuned", tuned)
    bits = _check_bits(bits)
    if name is not None and not isinstance(name, str):
        fail("name", "a string (the corruption's name) or None", name, error=InvalidTypeError)
    include_buffers = check_bool("include_buffers", include_buffers)
    _check_same_architecture(base, tuned, buffers=include_buffers)
    param_layer = _layer_map(base)
    layer_of = _layer_map(base, buffers=include_buffers)
    all_layers = list(dict.fromkeys(param_layer.values()))
    if num_layers is not None:
        num_layers = check_int("num_layers", num_layers, low=1, high=len(all_layers))
    base_p, tuned_p = _params(base), _params(tuned)
    changes = _layer_changes(base_p, tuned_p, param_layer)
    base_p, tuned_p = _tensors(base), _tensors(tuned)
    chosen = _choose_params(layers, num_layers, layer_of, all_layers, changes)
    sig = _extract_impl(base, base_p, tuned_p, chosen, layer_of, changes, name)
    return sig if bits is None else _quantize_impl(sig, bits)


def _choose_params(layers: Any, num_layers: int | None, layer_of: dict[str, str], all_layers: list[str],
                   changes: dict[str, float]) -> list[str]:
    if isinstance(layers, str) and layers in ("auto", "shallow"):
        half = max(1, math.ceil(RWS_DEFAULT_LAYER_FRACTION * len(all_layers)))
        k = num_layers if num_layers is not None else half
        if layers == "shallow":
            keep = set(all_layers[:k])
        else:  # rank the shallow part (at least k layers) by relative change; ties to the shallower
            candidates = all_layers[:max(k, half)]
            order = sorted(range(len(candidates)), key=lambda i: (-changes[candidates[i]], i))
            keep = {candidates[i] for i in order[:k]}
        return [p for p, layer in layer_of.items() if layer in keep]
    if isinstance(layers, str):
        layers = [x.strip() for x in layers.split(",") if x.strip()]
    if not isinstance(layers, (list, tuple)) or not layers or not all(isinstance(x, str) for x in layers):
        fail("layers", "'auto', 'shallow' or a non-empty list of layer or parameter names", layers)
    if num_layers is not None:
        fail("num_layers", "None when 'layers' lists names", num_layers)
    wanted: set[str] = set()
    for item in layers:
        if item in layer_of:
            wanted.add(item)
        elif item in all_layers:
            wanted.update(p for p, layer in layer_of.items() if layer == item)
        else:
            shown = ", ".join(all_layers[:12]) + (", ..." if len(all_layers) > 12 else "")
            fail("layers", f"names of layers of the model ({shown}) or of their parameters", item)
    return [p for p in layer_of if p in wanted]


def _extract_impl(base: nn.Module, base_p: dict[str, torch.Tensor], tuned_p: dict[str, torch.Tensor],
                  chosen: list[str], layer_of: dict[str, str], changes: dict[str, float],
                  name: str | None) -> Signature:
    data = {}
    for p in chosen:
        b, t = base_p[p], tuned_p[p].to(device=base_p[p].device)
        data[p] = (t.to(b.dtype) - b).detach().cpu().contiguous()
        if data[p].is_floating_point() and not bool(torch.isfinite(data[p]).all()):
            fail("tuned", "a model with finite weights (its difference to 'base' has NaN/inf)",
                 f"non-finite values in {p!r}", describe_got=False)
    return Signature(
        params=tuple(chosen),
        layers=tuple(dict.fromkeys(layer_of[p] for p in chosen)),
        shapes=tuple(tuple(base_p[p].shape) for p in chosen),
        dtypes=tuple(_dtype_name(base_p[p].dtype) for p in chosen),
        bits=None, data=data, steps={},
        architecture=architecture_fingerprint(base),
        full_copy_bytes=_full_copy_bytes(base),
        relative_change=dict(changes), name=name,
    )


# ----------------------------------------------------------------------------------- quantise
def quantize_signature(sig: Signature, bits: int) -> Signature:
    """Quantise a float signature to 8 or 4 bits (symmetric; per output channel or per tensor).

    For a parameter difference ``d`` with two or more dimensions, each output channel ``c``
    (``d[c]``) gets its own step ``step_c = max|d[c]| / qmax``; vectors get one step. Codes are
    ``q = clamp(round(d / step), -qmax, qmax)`` with ``qmax = 2^(bits-1) - 1`` (127 or 7), and
    the dequantised difference is ``q * step`` (float32), so every entry is within ``step / 2``
    of the float difference. 4-bit codes are stored two per byte. A channel that did not change
    keeps step 0 and codes 0.

    Raises
    ------
    InvalidParameterError
        ``bits`` not 8 or 4, or ``sig`` already quantised.
    """
    if not isinstance(sig, Signature):
        fail("sig", "a Signature", sig, error=InvalidTypeError)
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or int(bits) not in RWS_BITS:
        fail("bits", f"one of {set(RWS_BITS)}", bits)
    if sig.bits is not None:
        fail("sig", "a float signature (quantise from the float differences, not twice)",
             f"a signature already quantised to {sig.bits} bits", describe_got=False)
    return _quantize_impl(sig, int(bits))


def _quantize_impl(sig: Signature, bits: int) -> Signature:
    qmax = 2 ** (bits - 1) - 1
    data, steps = {}, {}
    for p in sig.params:
        d = sig.data[p].to(torch.float32)
        rows = d.reshape(d.shape[0], -1) if d.ndim >= 2 else d.reshape(1, -1)
        step = (rows.abs().amax(dim=1) / qmax).to(torch.float32)
        safe = torch.where(step > 0, step, torch.ones_like(step))
        q = torch.clamp(torch.round(rows / safe[:, None]), -qmax, qmax).to(torch.int8).flatten()
        data[p] = q if bits == 8 else _pack_int4(q)
        steps[p] = step
    return Signature(params=sig.params, layers=sig.layers, shapes=sig.shapes, dtypes=sig.dtypes, bits=bits,
                     data=data, steps=steps, architecture=sig.architecture, full_copy_bytes=sig.full_copy_bytes,
                     relative_change=sig.relative_change, name=sig.name)


def _pack_int4(q: torch.Tensor) -> torch.Tensor:
    u = (q.to(torch.int16) + 8).to(torch.uint8)  # codes -7..7 -> 1..15
    if u.numel() % 2:
        u = torch.cat([u, u.new_full((1,), 8)])
    return (u[0::2] | (u[1::2] << 4)).contiguous()


def _unpack_int4(packed: torch.Tensor, n: int) -> torch.Tensor:
    lo = (packed & 0x0F).to(torch.int16) - 8
    hi = (packed >> 4).to(torch.int16) - 8
    return torch.stack([lo, hi], dim=1).flatten()[:n].to(torch.int8)


def _dequantize(codes: torch.Tensor, step: torch.Tensor, bits: int, shape: tuple[int, ...]) -> torch.Tensor:
    n = math.prod(shape)
    q = codes if bits == 8 else _unpack_int4(codes, n)
    rows = q.to(torch.float32).reshape(step.shape[0], -1)
    return (rows * step[:, None]).reshape(shape)


# ----------------------------------------------------------------------------------- apply / remove
def apply_signature(model: nn.Module, sig: Signature, *, scale: float = 1.0) -> nn.Module:
    """A new model ``theta + scale * sig`` (the caller's model is not changed).

    The sum is computed in float64 and rounded once to each parameter's dtype. The returned
    model carries an undo record (``robustlab_patches``) with which :func:`remove_signature`
    restores the weights bit for bit. Mode (train/eval), ``requires_grad`` and device follow
    ``model``.

    ``model`` needs the signature's tensors (same names and shapes), not the base model's whole
    architecture: a signature moves to any model sharing those layers (e.g. one with another
    classifier head, as in the paper's transfer across datasets). The base architecture's
    fingerprint (:attr:`Signature.architecture`) is stored for reference and named in errors.

    Raises
    ------
    InvalidParameterError
        ``scale`` not finite, or ``model`` not of the signature's architecture (parameter names
        and shapes).
    """
    if not isinstance(sig, Signature):
        fail("sig", "a Signature", sig, error=InvalidTypeError)
    return apply_signatures(model, [sig], [check_number("scale", scale)])


def apply_signatures(model: nn.Module, sigs: Sequence[Signature], scales: Sequence[float] | float = 1.0
                     ) -> nn.Module:
    """A new model ``theta + sum_i scales[i] * sigs[i]`` (the paper's property (3), "composable").

    The sum is formed in float64 in a canonical order (by signature fingerprint) and rounded
    once, so the result does not depend on the order of ``sigs``, bit for bit. ``scales`` is one
    number for all or one per signature.
    """
    _check_module("model", model)
    if isinstance(sigs, Signature):
        sigs = [sigs]
    if not isinstance(sigs, (list, tuple)) or not sigs:
        fail("sigs", "a non-empty list of Signature", sigs, error=InvalidTypeError)
    for s in sigs:
        if not isinstance(s, Signature):
            fail("sigs", "a list of Signature", s, error=InvalidTypeError)
    scales = _check_scales(scales, len(sigs))
    for s in sigs:
        _check_fits(model, s)
    out = _copy_model(model)
    log = getattr(out, PATCH_ATTR, None)
    log = log if isinstance(log, PatchLog) else PatchLog()
    entry = _apply_impl(out, list(zip(sigs, scales)))
    log.entries.append(entry)
    object.__setattr__(out, PATCH_ATTR, log)
    return out


def remove_signature(model: nn.Module, sig: Signature, *, scale: float = 1.0) -> nn.Module:
    """A new model with ``scale * sig`` taken off (the caller's model is not changed).

    When ``model`` carries an undo record holding this signature at this scale and the touched
    weights are unchanged since, the result is exact: bit for bit the model the other recorded
    applications alone give (apply then remove restores the original weights bit for bit).
    Otherwise ``theta - scale * sig`` is computed in float64 and rounded once (within a rounding
    step of the weights before the signature was added, plus the quantisation error if the
    signature applied was not this one), with a warning.
    """
    _check_module("model", model)
    if not isinstance(sig, Signature):
        fail("sig", "a Signature", sig, error=InvalidTypeError)
    scale = _check_scales([scale], 1, name="scale")[0]
    _check_fits(model, sig)
    out = _copy_model(model)
    log = getattr(out, PATCH_ATTR, None)
    if isinstance(log, PatchLog) and _undo(out, log, sig, scale):
        return out
    warnings.warn("The model carries no record of this signature applied at this scale (or its weights "
                  "changed since); removing it arithmetically, exact only up to floating-point rounding.",
                  stacklevel=2)
    _apply_impl(out, [(sig, -scale)])
    return out


def _apply_impl(model: nn.Module, pairs: list[tuple[Signature, float]]) -> _Entry:
    params = _tensors(model)
    pairs_sorted = sorted(pairs, key=lambda ps: (ps[0].fingerprint, ps[1]))
    touched = list(dict.fromkeys(p for sig, _ in pairs_sorted for p in sig.params))
    originals = {p: params[p].detach().clone() for p in touched}
    with torch.no_grad():
        for p in touched:
            w = params[p]
            total = w.detach().to(torch.float64)
            for sig, scale in pairs_sorted:
                if p in sig.data:
                    total = total + scale * _delta(sig, p).to(device=w.device, dtype=torch.float64)
            if p.endswith("running_var") and bool((total <= 0).any()):
                fail("scale", "a scale that keeps BatchNorm running variances positive (scales in [0, 1] "
                     f"always do); {p!r} would go non-positive", [sc for _, sc in pairs_sorted],
                     describe_got=True)
            w.copy_(total.to(w.dtype))
    written = {p: _hash(params[p]) for p in touched}
    return _Entry(pairs=list(pairs), originals=originals, written=written)


def _undo(model: nn.Module, log: PatchLog, sig: Signature, scale: float) -> bool:
    """Exact removal from the record; False (model untouched) when it cannot be done exactly."""
    index = next((i for i in range(len(log.entries) - 1, -1, -1)
                  if any(s.fingerprint == sig.fingerprint and sc == scale for s, sc in log.entries[i].pairs)),
                 None)
    if index is None:
        return False
    params = _tensors(model)
    latest: dict[str, str] = {}
    for entry in log.entries[index:]:
        latest.update(entry.written)
    if any(p not in params or _hash(params[p]) != h for p, h in latest.items()):
        return False
    later = log.entries[index + 1:]
    target = log.entries[index]
    # Roll back every tensor touched from `index` on to its value before the first entry touching it.
    restore: dict[str, torch.Tensor] = {}
    for entry in reversed(log.entries[index:]):
        restore.update(entry.originals)
    with torch.no_grad():
        for p, value in restore.items():
            params[p].copy_(value)
    del log.entries[index:]
    remaining = list(target.pairs)
    remaining.pop(next(i for i, (s, sc) in enumerate(remaining) if s.fingerprint == sig.fingerprint and sc == scale))
    for pairs in ([remaining] if remaining else []) + [e.pairs for e in later]:
        log.entries.append(_apply_impl(model, list(pairs)))
    return True


def _delta(sig: Signature, p: str) -> torch.Tensor:
    if sig.bits is None:
        return sig.data[p]
    i = sig.params.index(p)
    return _dequantize(sig.data[p], sig.steps[p], sig.bits, sig.shapes[i])


def _copy_model(model: nn.Module) -> nn.Module:
    try:
        return copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001 - e.g. a module holding a non-copyable handle
        fail("model", "a model that copy.deepcopy can copy (apply/remove return a new model)",
             f"{type(model).__name__}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
             describe_got=False, error=InvalidTypeError)


# ----------------------------------------------------------------------------------- save / load
def save_signature(sig: Signature, path: str | Path) -> Path:
    """Write ``sig`` to a ``.safetensors`` file (atomically).

    Tensors: ``delta/<param>`` (float signatures) or ``codes/<param>`` and ``steps/<param>``
    (quantised). Metadata (JSON strings): format and version, parameter and layer names, shapes,
    dtypes, bits and scheme, the base architecture's fingerprint, the full-copy size, the
    per-layer relative changes and the corruption name.
    """
    from safetensors.torch import save_file

    from robustlab._io import atomic_path

    if not isinstance(sig, Signature):
        fail("sig", "a Signature", sig, error=InvalidTypeError)
    target = Path(path)
    if target.is_dir() or not target.parent.is_dir():
        fail("path", "a file path in an existing folder", str(target))
    tensors: dict[str, torch.Tensor] = {}
    for p in sig.params:
        if sig.bits is None:
            tensors[f"delta/{p}"] = sig.data[p].contiguous()
        else:
            tensors[f"codes/{p}"] = sig.data[p].contiguous()
            tensors[f"steps/{p}"] = sig.steps[p].contiguous()
    meta = {
        "format": RWS_FORMAT, "version": str(RWS_FORMAT_VERSION),
        "params": json.dumps(list(sig.params)), "layers": json.dumps(list(sig.layers)),
        "shapes": json.dumps([list(s) for s in sig.shapes]), "dtypes": json.dumps(list(sig.dtypes)),
        "bits": "none" if sig.bits is None else str(sig.bits),
        "scheme": "float" if sig.bits is None else "symmetric, per output channel (vectors per tensor)",
        "architecture": sig.architecture, "full_copy_bytes": str(sig.full_copy_bytes),
        "relative_change": json.dumps(dict(sig.relative_change)),
        "name": json.dumps(sig.name),
    }
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return target


def load_signature(path: str | Path) -> Signature:
    """Read a signature written by :func:`save_signature` (validated; errors name the file)."""
    from safetensors import safe_open

    target = Path(path)
    if not target.is_file():
        raise CheckpointError(f"Cannot load a signature from '{target}': no such file.")
    try:
        with safe_open(str(target), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open is not iterable
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds on damaged files
        raise CheckpointError(f"Cannot load the signature '{target}': not a readable safetensors file "
                              f"({_first_line(exc)}).") from None
    if meta.get("format") != RWS_FORMAT:
        raise CheckpointError(f"Cannot load the signature '{target}': it is not a robustlab signature "
                              f"(no '{RWS_FORMAT}' format tag).")
    try:
        params = tuple(json.loads(meta["params"]))
        bits = None if meta["bits"] == "none" else int(meta["bits"])
        shapes = tuple(tuple(int(v) for v in s) for s in json.loads(meta["shapes"]))
        sig = Signature(
            params=params, layers=tuple(json.loads(meta["layers"])), shapes=shapes,
            dtypes=tuple(json.loads(meta["dtypes"])), bits=bits,
            data={p: tensors[f"delta/{p}" if bits is None else f"codes/{p}"] for p in params},
            steps={} if bits is None else {p: tensors[f"steps/{p}"] for p in params},
            architecture=meta["architecture"], full_copy_bytes=int(meta["full_copy_bytes"]),
            relative_change={k: float(v) for k, v in json.loads(meta["relative_change"]).items()},
            name=json.loads(meta["name"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"Cannot load the signature '{target}': damaged metadata or a missing "
                              f"tensor ({_first_line(exc)}).") from None
    _check_loaded(sig, target)
    return sig


def _check_loaded(sig: Signature, target: Path) -> None:
    if sig.bits not in (None, *RWS_BITS) or len(sig.shapes) != len(sig.params) or len(sig.dtypes) != len(sig.params):
        raise CheckpointError(f"Cannot load the signature '{target}': inconsistent metadata.")
    for p, shape in zip(sig.params, sig.shapes):
        n = math.prod(shape)
        d = sig.data[p]
        if sig.bits is None:
            ok = tuple(d.shape) == shape
        else:
            rows = shape[0] if len(shape) >= 2 else 1
            want = n if sig.bits == 8 else (n + 1) // 2
            ok = d.numel() == want and tuple(sig.steps[p].shape) == (rows,)
        if not ok:
            raise CheckpointError(f"Cannot load the signature '{target}': the stored tensor for {p!r} does "
                                  f"not match its recorded shape {shape}.")


def save_patch_log(model: nn.Module, path: str | Path) -> Path | None:
    """Write a patched model's undo record to ``path`` (safetensors); None if it has none.

    The file holds, per application, the signatures (as stored), their scales, the original
    values of the touched tensors and the hashes written; :func:`load_patch_log` attaches it to
    a model loaded from the same folder so removal stays exact across processes.
    """
    from safetensors.torch import save_file

    from robustlab._io import atomic_path

    log = getattr(model, PATCH_ATTR, None)
    if not isinstance(log, PatchLog) or not log.entries:
        return None
    tensors: dict[str, torch.Tensor] = {}
    entries, sigs_meta = [], {}
    for i, entry in enumerate(log.entries):
        pairs = []
        for sig, scale in entry.pairs:
            fp = sig.fingerprint
            if fp not in sigs_meta:
                sigs_meta[fp] = _sig_meta(sig)
                for p in sig.params:
                    tensors[f"sig/{fp}/data/{p}"] = sig.data[p].contiguous()
                    if p in sig.steps:
                        tensors[f"sig/{fp}/steps/{p}"] = sig.steps[p].contiguous()
            pairs.append([fp, float(scale)])
        for p, value in entry.originals.items():
            tensors[f"entry/{i}/{p}"] = value.detach().cpu().contiguous()
        entries.append({"pairs": pairs, "written": entry.written})
    target = Path(path)
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={"format": RWS_FORMAT + "-patches",
                                               "entries": json.dumps(entries), "signatures": json.dumps(sigs_meta)})
    return target


def load_patch_log(model: nn.Module, path: str | Path) -> nn.Module:
    """Attach the undo record in ``path`` to ``model`` (in place; returns it). Missing file: no-op."""
    from safetensors import safe_open

    target = Path(path)
    if not target.is_file():
        return model
    try:
        with safe_open(str(target), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open is not iterable
        sigs = {fp: _sig_from_meta(m, {k.split("/", 3)[3]: v for k, v in tensors.items()
                                       if k.startswith(f"sig/{fp}/data/")},
                                   {k.split("/", 3)[3]: v for k, v in tensors.items()
                                    if k.startswith(f"sig/{fp}/steps/")})
                for fp, m in json.loads(meta["signatures"]).items()}
        log = PatchLog()
        for i, e in enumerate(json.loads(meta["entries"])):
            prefix = f"entry/{i}/"
            originals = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            log.entries.append(_Entry(pairs=[(sigs[fp], float(sc)) for fp, sc in e["pairs"]],
                                      originals=originals, written=dict(e["written"])))
    except Exception as exc:  # noqa: BLE001 - damaged file or metadata, any kind
        raise CheckpointError(f"Cannot load the signature record '{target}': {_first_line(exc)}.") from None
    params = _tensors(model)
    for entry in log.entries:
        for p, value in list(entry.originals.items()):
            if p in params:
                entry.originals[p] = value.to(device=params[p].device)
    object.__setattr__(model, PATCH_ATTR, log)
    return model


def _sig_meta(sig: Signature) -> dict[str, Any]:
    return {"params": list(sig.params), "layers": list(sig.layers), "shapes": [list(s) for s in sig.shapes],
            "dtypes": list(sig.dtypes), "bits": sig.bits, "architecture": sig.architecture,
            "full_copy_bytes": sig.full_copy_bytes, "name": sig.name}


def _sig_from_meta(m: dict[str, Any], data: dict[str, torch.Tensor], steps: dict[str, torch.Tensor]) -> Signature:
    return Signature(params=tuple(m["params"]), layers=tuple(m["layers"]),
                     shapes=tuple(tuple(s) for s in m["shapes"]), dtypes=tuple(m["dtypes"]), bits=m["bits"],
                     data=data, steps=steps, architecture=m["architecture"],
                     full_copy_bytes=int(m["full_copy_bytes"]), name=m["name"])


# ----------------------------------------------------------------------------------- curve
def signature_scale_curve(
    base: nn.Module,
    sig: Signature,
    inputs: Any,
    labels: Any,
    *,
    scales: Iterable[float] = RWS_CURVE_SCALES,
    corrupted_inputs: Any = None,
    batch_size: int | None = None,
) -> SignatureCurve:
    """Clean (and corrupted) accuracy of ``base + s * sig`` for each scale ``s``.

    The paper's "in-situ adjustable" property (2): re-scaling the signature trades clean
    accuracy for accuracy on the corruption. ``corrupted_inputs`` are the same examples
    corrupted (same ``labels``); without them only clean accuracy is reported.
    """
    from robustlab._constants import EVAL_BATCH_SIZE
    from robustlab.models.inference import predict_logits

    _check_module("base", base)
    if not isinstance(sig, Signature):
        fail("sig", "a Signature", sig, error=InvalidTypeError)
    x = check_inputs("inputs", inputs)
    y = check_labels("labels", labels, n=x.shape[0])
    xc = None
    if corrupted_inputs is not None:
        xc = check_inputs("corrupted_inputs", corrupted_inputs)
        if tuple(xc.shape) != tuple(x.shape):
            raise ShapeError(f"The 'corrupted_inputs' parameter must have the shape of 'inputs' {tuple(x.shape)}. "
                             f"Got {describe(xc)} instead.", expected=tuple(x.shape), got=tuple(xc.shape))
    scale_list = list(scales) if not isinstance(scales, (str, bytes)) else None
    if not scale_list:
        fail("scales", "a non-empty sequence of finite numbers", scales)
    scale_list = _check_scales(scale_list, len(scale_list), name="scales")
    bs = EVAL_BATCH_SIZE if batch_size is None else check_int("batch_size", batch_size, low=1)
    _check_fits(base, sig, "base")
    clean, corrupted = [], []
    for s in scale_list:
        patched = _patched_copy(base, sig, s)
        clean.append(_accuracy(predict_logits(patched, x, batch_size=bs), y))
        if xc is not None:
            corrupted.append(_accuracy(predict_logits(patched, xc, batch_size=bs), y))
    return SignatureCurve(scales=tuple(scale_list), clean_accuracy=tuple(clean),
                          corrupted_accuracy=tuple(corrupted) if xc is not None else None,
                          num_bytes=sig.num_bytes, full_copy_bytes=sig.full_copy_bytes)


def _patched_copy(base: nn.Module, sig: Signature, scale: float) -> nn.Module:
    out = _copy_model(base)
    _apply_impl(out, [(sig, scale)])
    return out


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    if y.numel() == 0:
        return float("nan")
    return float((logits.argmax(dim=1).cpu() == y.cpu()).double().mean())


# ----------------------------------------------------------------------------------- helpers
def architecture_fingerprint(model: nn.Module) -> str:
    """SHA-256 prefix of the model's state-dict names and shapes (dtype and values ignored)."""
    items = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def _check_module(name: str, model: Any) -> None:
    if not isinstance(model, nn.Module):
        fail(name, "a torch.nn.Module", model, error=InvalidTypeError)


def _check_bits(bits: Any) -> int | None:
    if bits is None:
        return None
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or int(bits) not in RWS_BITS:
        fail("bits", "None, 8 or 4", bits)
    return int(bits)


def _check_scales(scales: Any, n: int, *, name: str = "scales") -> list[float]:
    if isinstance(scales, numbers.Real) and not isinstance(scales, bool):
        scales = [scales] * n
    if isinstance(scales, torch.Tensor | np.ndarray):
        scales = scales.tolist()
    if not isinstance(scales, (list, tuple)):
        fail(name, "a finite number or one finite number per signature", scales, error=InvalidTypeError)
    if len(scales) != n:
        fail(name, f"one number per signature ({n})", f"{len(scales)} numbers", describe_got=False)
    label = "scale" if name == "scale" or n == 1 else name
    return [check_number(label, s) for s in scales]


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.named_parameters()}


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and floating-point buffers by state-dict name (the tensors a signature may patch)."""
    out: dict[str, torch.Tensor] = dict(model.named_parameters())
    out.update((k, b) for k, b in model.named_buffers() if b.is_floating_point())
    return out


def _layer_map(model: nn.Module, *, buffers: bool = False) -> dict[str, str]:
    """Parameter name -> name of the module owning it (model order); with ``buffers``, also the
    floating-point buffers of modules that own parameters (BatchNorm running statistics)."""
    out: dict[str, str] = {}
    for mod_name, module in model.named_modules():
        own = [n for n, _ in module.named_parameters(recurse=False)]
        if buffers and own:
            own += [n for n, b in module.named_buffers(recurse=False) if b.is_floating_point()]
        for p_name in own:
            out[f"{mod_name}.{p_name}" if mod_name else p_name] = mod_name or p_name
    order = [k for k, _ in model.named_parameters()]
    return {k: out[k] for k in order if k in out} | {k: v for k, v in out.items() if k not in order}


def _layer_changes(base_p: dict[str, torch.Tensor], tuned_p: dict[str, torch.Tensor],
                   layer_of: dict[str, str]) -> dict[str, float]:
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for p, layer in layer_of.items():
        b = base_p[p].to(torch.float64)
        t = tuned_p[p].to(device=b.device, dtype=torch.float64)
        num[layer] = num.get(layer, 0.0) + float(((t - b) ** 2).sum())
        den[layer] = den.get(layer, 0.0) + float((b ** 2).sum())
    out = {}
    for layer, sq in num.items():
        if den[layer] > 0:
            out[layer] = math.sqrt(sq / den[layer])
        else:
            out[layer] = math.inf if sq > 0 else 0.0
    return out


def _check_same_architecture(base: nn.Module, tuned: nn.Module, *, buffers: bool = False) -> None:
    pick = _tensors if buffers else (lambda m: dict(m.named_parameters()))
    a = {k: tuple(v.shape) for k, v in pick(base).items()}
    b = {k: tuple(v.shape) for k, v in pick(tuned).items()}
    if a == b:
        return
    missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if missing or extra:
        what = f"parameters only in base: {missing[:3]}; only in tuned: {extra[:3]}"
    else:
        k = next(k for k in a if a[k] != b[k])
        what = f"{k!r} has shape {a[k]} in base and {b[k]} in tuned"
    fail("tuned", "a model of the base model's architecture (same parameter names and shapes)", what,
         describe_got=False)


def _check_fits(model: nn.Module, sig: Signature, name: str = "model") -> None:
    tensors = _tensors(model)
    params = {k: tuple(v.shape) for k, v in tensors.items()}
    for p, shape in zip(sig.params, sig.shapes):
        if p not in params:
            fail(name, f"a model of the signature's architecture (fingerprint {sig.architecture}), with a "
                 f"parameter {p!r}", f"a {type(model).__name__} without it", describe_got=False)
        if params[p] != shape:
            fail(name, f"a model of the signature's architecture (fingerprint {sig.architecture})",
                 f"{p!r} of shape {params[p]} where the signature has {shape}", describe_got=False)
        if not tensors[p].is_floating_point():
            fail(name, "a model whose patched parameters are floating point", p)


def _full_copy_bytes(model: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for t in model.state_dict().values():
        if t.is_floating_point() and id(t) not in seen:
            seen.add(id(t))
            total += _nbytes(t)
    return total


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _hash(t: torch.Tensor) -> str:
    return hashlib.sha256(_tensor_bytes(t)).hexdigest()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
