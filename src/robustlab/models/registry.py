"""The model registry and :func:`build_model`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from robustlab._checks import check_generator, check_int, fail
from robustlab._registry import Registry
from robustlab.errors import InvalidParameterError, UnknownNameError
from robustlab.models.cnn import small_cnn
from robustlab.models.layers import Stats
from robustlab.models.mlp import mlp
from robustlab.models.resnet import preact_resnet18
from robustlab.models.wide_resnet import wide_resnet

__all__ = ["MODELS", "ModelFactory", "build_model", "model_names", "model_params"]

#: ``factory(input_shape, num_classes, *, mean=None, std=None, **arch_params) -> nn.Module``
ModelFactory = Callable[..., nn.Module]

#: Architectures by name. Register your own with ``MODELS.register("name", factory)``; the
#: factory's keyword-only parameters (other than ``mean``/``std``) become its accepted params.
MODELS: Registry[ModelFactory] = Registry("model")
MODELS.register("mlp", mlp)
MODELS.register("small-cnn", small_cnn)
MODELS.register("preact-resnet18", preact_resnet18)
MODELS.register("wide-resnet", wide_resnet)

_NORM_ARGS = ("mean", "std")


def model_names() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return MODELS.names()


def model_params(name: str) -> dict[str, Any]:
    """Architecture parameters of model ``name`` and their defaults (``mean``/``std`` excluded).

    Examples
    --------
    >>> model_params("wide-resnet")
    {'depth': 28, 'widen_factor': 10, 'dropout': 0.0}
    """
    params, _ = _accepted_params(MODELS.get(name))
    return params


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    mean: Stats | None = None,
    std: Stats | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    **params: Any,
) -> nn.Module:
    """Build a registered architecture, validating every argument.

    Parameters
    ----------
    name : str
        One of :func:`model_names`: ``"mlp"``, ``"small-cnn"``, ``"preact-resnet18"``,
        ``"wide-resnet"`` (or a name registered in :data:`MODELS`).
    input_shape : tuple of int
        Per-example shape: ``(C, H, W)`` for images (``H, W >= 8`` for the convolutional models)
        or ``(D,)`` for tabular data (``"mlp"`` only).
    num_classes : int
        Number of classes ``K >= 2``; the model returns logits ``(N, K)``.
    mean, std : float or sequence of float, optional
        Statistics of the training inputs for the normalisation layer inside the model: one value
        per channel (images) or per feature (tabular). ``None`` means identity. Inputs stay in
        [0, 1]; the model normalises them itself.
    generator : torch.Generator, optional
        Makes initialisation reproducible: a seed is drawn from it (advancing it), and the
        weights are initialised under that seed.
    seed : int, optional
        Same, with a fixed seed. Give at most one of ``generator`` and ``seed``.
    **params
        Architecture parameters; see :func:`model_params` (e.g. ``hidden_sizes`` for ``"mlp"``,
        ``depth``/``widen_factor``/``dropout`` for ``"wide-resnet"``).

    Returns
    -------
    nn.Module
        In training mode, on CPU, in the default dtype.

    Raises
    ------
    UnknownNameError
        Unknown ``name`` (the message lists valid names) or unknown architecture parameters (the
        message lists the accepted ones).
    InvalidParameterError, InvalidTypeError
        Bad ``input_shape``, ``num_classes``, ``mean``/``std`` or parameter values.

    Notes
    -----
    Initialisation uses PyTorch's (or the reference paper's) initialisers, which draw from the
    global CPU generator. With ``generator`` or ``seed``, that generator is forked
    (``torch.random.fork_rng``), seeded, used, and restored, so the caller's global RNG state is
    unchanged — but the global generator is briefly reseeded, so do not build models in one
    thread while another draws from the global RNG. With neither, initialisation draws from the
    global RNG like any ``nn.Module`` constructor (not reproducible unless the caller seeded it).

    Examples
    --------
    >>> model = build_model("small-cnn", (1, 8, 8), 10, seed=0)
    >>> model(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    factory = MODELS.get(name)
    accepted, has_var_kw = _accepted_params(factory)
    unknown = sorted(set(params) - set(accepted))
    if unknown and not has_var_kw:
        listed = ", ".join(repr(p) for p in accepted) or "none"
        fail("params", f"parameters of model {name!r} (accepted: {listed})",
             ", ".join(repr(p) for p in unknown), describe_got=False, error=UnknownNameError)
    init_seed = _init_seed(generator, seed)
    with _seeded(init_seed):
        return factory(input_shape, num_classes, mean=mean, std=std, **params)


def _accepted_params(factory: ModelFactory) -> tuple[dict[str, Any], bool]:
    """Keyword-only parameters of a factory (minus mean/std) with defaults; and whether it takes **kw."""
    sig = inspect.signature(factory)
    params = {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in sig.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _NORM_ARGS
    }
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    return params, has_var_kw


def _init_seed(generator: torch.Generator | None, seed: int | None) -> int | None:
    if generator is not None and seed is not None:
        raise InvalidParameterError("The 'generator' and 'seed' parameters must not both be given. "
                                    "Got both instead.")
    if seed is not None:
        return check_int("seed", seed, low=0)
    if generator is not None:
        gen = check_generator("generator", generator)
        return int(torch.randint(0, 2**62, (), generator=gen, device=gen.device))
    return None


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Run the block with the global CPU generator seeded to ``seed``, then restore its state."""
    if seed is None:
        yield
        return
    # devices=[]: models are built on CPU; leave every accelerator RNG alone.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield
