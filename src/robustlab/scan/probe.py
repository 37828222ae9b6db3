"""The Probe protocol and the result types every probe returns.

A probe takes a model and data and returns a :class:`ProbeResult`: result rows (one measured value
each), figures (inline SVG) and tables. Probes never write files; the runner stores what they return
and the report renders whatever the store holds, so a new probe needs no change to either.

A probe may split its work into independent *jobs* (one per ``eps``, one per corruption, ...). A job
is the unit that is stored in one transaction, skipped on resume and, later, sent to a Ray worker.
"""

from __future__ import annotations

import hashlib
import io
import json
import numbers
import re
import sys
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from robustlab._checks import check_bool, check_choice, check_number, fail
from robustlab._registry import Registry
from robustlab.errors import InvalidParameterError, InvalidTypeError

__all__ = [
    "ResultRow",
    "Figure",
    "Table",
    "ProbeResult",
    "Probe",
    "PROBES",
    "BUILTIN_PROBE_MODULES",
    "build_probe",
    "ModelCache",
    "check_headline_radius",
    "check_radius_grid",
    "figure_to_svg",
    "canonical_json",
    "json_text",
    "job_label",
    "seeded_generator",
    "model_state_stamp",
]

#: Modules that register the built-in probes, imported the first time :data:`PROBES` is read.
#: A package adding a probe appends its module here (e.g. ``"robustlab.label_noise.probe"``).
BUILTIN_PROBE_MODULES: tuple[str, ...] = ("robustlab.scan.clean", "robustlab.corruptions.probe",
                                          "robustlab.label_noise.probe", "robustlab.adversarial.probe",
                                          "robustlab.certified.probe", "robustlab.calibration.probe",
                                          "robustlab.detection.probe")

#: Salt for Matplotlib's SVG ids, so the same figure always renders to the same SVG text.
_SVG_HASH_SALT = "robustlab"

_SVG_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)

#: Markup that trusted, Matplotlib-made SVG never contains; refusing it keeps |safe insertion safe.
_SVG_FORBIDDEN = ("<script", "<foreignobject", "javascript:")


# --------------------------------------------------------------------------- JSON keys
def canonical_json(value: Any, *, name: str = "value") -> str:
    """JSON text with sorted keys and no spaces, so equal settings always give equal text.

    Parameters
    ----------
    value : JSON-serialisable
        ``str``, finite numbers, ``bool``, ``None``, lists/tuples and dicts with ``str`` keys
        (NumPy scalars are accepted and stored as Python numbers).
    name : str, default "value"
        Parameter name used in the error message.

    Returns
    -------
    str
    """
    return json_text(value, name=name, sort_keys=True)


def json_text(value: Any, *, name: str = "value", sort_keys: bool = False) -> str:
    """Strict JSON text (no NaN, no arbitrary objects); keeps key order unless ``sort_keys``."""
    try:
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=_json_default)
    except (TypeError, ValueError):
        fail(name, "JSON-serialisable (str, finite numbers, bool, None, lists and dicts with str keys)",
             value, error=InvalidTypeError)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(type(obj).__name__)


def _json_dict(name: str, value: Any) -> dict[str, Any]:
    """A plain-JSON copy of a mapping (tuples become lists), identical to what the store reads back."""
    if not isinstance(value, Mapping):
        fail(name, "a dict with str keys", value, error=InvalidTypeError)
    if any(not isinstance(k, str) for k in value):
        fail(name, "a dict with str keys", value, error=InvalidTypeError)
    return json.loads(canonical_json(dict(value), name=name))


def job_label(job: Mapping[str, Any]) -> str:
    """Readable one-line form of a job key: ``"eps=0.03, norm=linf"``, or ``"all"`` for ``{}``."""
    if not job:
        return "all"
    return ", ".join(f"{k}={_plain(v)}" for k, v in sorted(job.items()))


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _check_name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        fail(name, "a non-empty str", value, error=InvalidTypeError)
    return value


# --------------------------------------------------------------------------- result types
@dataclass(frozen=True)
class ResultRow:
    """One measured value.

    Parameters
    ----------
    metric : str
        What was measured, snake_case (``"accuracy"``, ``"robust_accuracy"``).
    value : float
        The measurement. ``nan`` means "undefined" (e.g. accuracy of a class with no examples).
    params : dict, default {}
        JSON-serialisable settings the value depends on: ``{"class": "3"}``,
        ``{"eps": 0.03, "norm": "linf"}``. Stored as canonical JSON.
    unit : str, default ""
        ``""`` for ratios and counts, else e.g. ``"ms"`` or ``"examples/s"``.
    headline : bool, default False
        Shown in the report summary and returned in :class:`~robustlab.scan.ScanSummary`.
    """

    metric: str
    value: float
    params: dict[str, Any] = field(default_factory=dict)
    unit: str = ""
    headline: bool = False

    def __post_init__(self) -> None:
        _check_name("metric", self.metric)
        if isinstance(self.value, bool) or not isinstance(self.value, numbers.Real):
            fail("value", "a real number (float)", self.value, error=InvalidTypeError)
        if not isinstance(self.unit, str):
            fail("unit", "a str", self.unit, error=InvalidTypeError)
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "params", _json_dict("params", self.params))
        object.__setattr__(self, "headline", check_bool("headline", self.headline))


@dataclass(frozen=True)
class Figure:
    """A figure as inline SVG text (see :func:`figure_to_svg`).

    The report inserts ``svg`` without escaping, so it must come from Matplotlib (which escapes
    every text it draws); markup that Matplotlib never writes (``<script>``, ``<foreignObject>``)
    is refused.
    """

    name: str
    title: str
    svg: str

    def __post_init__(self) -> None:
        _check_name("name", self.name)
        if not isinstance(self.title, str):
            fail("title", "a str", self.title, error=InvalidTypeError)
        if not isinstance(self.svg, str) or not self.svg.lstrip().startswith("<svg"):
            fail("svg", "SVG text starting with '<svg' (use figure_to_svg)", self.svg,
                 error=InvalidTypeError)
        lowered = self.svg.lower()
        bad = [m for m in _SVG_FORBIDDEN if m in lowered]
        if bad:
            fail("svg", "SVG without scripts or embedded HTML", f"SVG containing {bad[0]!r}",
                 describe_got=False)


@dataclass(frozen=True)
class Table:
    """A tabular block (e.g. a confusion matrix): column names and rows of JSON scalars."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def __post_init__(self) -> None:
        _check_name("name", self.name)
        if not isinstance(self.title, str):
            fail("title", "a str", self.title, error=InvalidTypeError)
        columns = tuple(self.columns)
        if any(not isinstance(c, str) for c in columns):
            fail("columns", "a sequence of str", self.columns, error=InvalidTypeError)
        rows = tuple(tuple(_cell(v) for v in row) for row in self.rows)
        for row in rows:
            if len(row) != len(columns):
                fail("rows", f"rows of {len(columns)} cells (one per column)", f"a row of {len(row)}",
                     describe_got=False)
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "rows", rows)


def _cell(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    fail("rows", "cells that are str, int, float, bool or None", value, error=InvalidTypeError)


@dataclass(frozen=True)
class ProbeResult:
    """Everything one probe job returns: rows, figures, tables and an optional summary sentence."""

    rows: tuple[ResultRow, ...] = ()
    figures: tuple[Figure, ...] = ()
    tables: tuple[Table, ...] = ()
    summary: str = ""

    def __post_init__(self) -> None:
        for attr, kind in (("rows", ResultRow), ("figures", Figure), ("tables", Table)):
            items = tuple(getattr(self, attr))
            if any(not isinstance(item, kind) for item in items):
                fail(attr, f"a sequence of {kind.__name__}", getattr(self, attr), error=InvalidTypeError)
            object.__setattr__(self, attr, items)
        if not isinstance(self.summary, str):
            fail("summary", "a str", self.summary, error=InvalidTypeError)
        # The store keys rows by (metric, params) and blocks by name: duplicates would be ambiguous.
        _check_unique("rows", [(r.metric, canonical_json(r.params)) for r in self.rows])
        _check_unique("figures", [f.name for f in self.figures])
        _check_unique("tables", [t.name for t in self.tables])


def _check_unique(name: str, keys: Sequence[Any]) -> None:
    seen: set[Any] = set()
    for key in keys:
        if key in seen:
            raise InvalidParameterError(
                f"The '{name}' parameter must not repeat an entry. Got {key!r} twice instead.")
        seen.add(key)


# --------------------------------------------------------------------------- the protocol
@runtime_checkable
class Probe(Protocol):
    """What the scan runner needs from a probe.

    Subclass it to inherit the default :meth:`jobs` (a single job), or implement every member.

    Attributes
    ----------
    name : str
        Registry name, also the key of the probe's results in the store (``"clean"``).
    title : str
        Heading of the probe's report section (``"Clean accuracy"``).
    """

    name: str
    title: str

    def params(self) -> dict[str, Any]:
        """JSON-serialisable settings; they identify the probe's jobs, so changing one reruns them."""
        ...

    def jobs(self) -> list[dict[str, Any]]:
        """Independent pieces of work as JSON-serialisable keys; default: one job, ``{}``.

        Each job is stored in one transaction and skipped on resume once stored.
        """
        return [{}]

    def run(self, model: Any, data: Any, *, job: dict[str, Any],
            generator: torch.Generator) -> ProbeResult:
        """Measure ``model`` on ``data`` for one ``job``; never writes files.

        ``generator`` is a CPU ``torch.Generator`` seeded from the scan seed, the probe name and the
        job key, so a job gives the same result however jobs are split or resumed.
        """
        ...


#: Probe classes (or factories) by name. ``build_probe(name, **params)`` instantiates one.
PROBES: Registry[Any] = Registry("probe", builtin_modules=lambda: BUILTIN_PROBE_MODULES)


def build_probe(name: str, **params: Any) -> Probe:
    """Instantiate the probe registered as ``name`` with its settings.

    Parameters
    ----------
    name : str
        A name in ``PROBES.names()``; an unknown name raises
        :class:`~robustlab.errors.UnknownNameError` listing the valid ones.
    **params
        Passed to the probe's constructor, which validates them.

    Examples
    --------
    >>> build_probe("clean").name
    'clean'
    """
    return PROBES.get(name)(**params)


# --------------------------------------------------------------------------- helpers for probes
def check_radius_grid(eps: Any, norms: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """A probe's ``eps`` setting: a non-empty dict from a norm among ``norms`` to a non-empty list
    of distinct radii ``> 0``; returns each list sorted (the adversarial and certified probes)."""
    if not isinstance(eps, Mapping) or not eps:
        fail("eps", f"a non-empty dict from norm ({', '.join(repr(n) for n in norms)}) to a list of radii",
             eps, error=InvalidTypeError)
    grid: dict[str, tuple[float, ...]] = {}
    for norm, values in eps.items():
        check_choice("eps", norm, tuple(norms))
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            fail("eps", f"a non-empty list of radii for norm {norm!r}", values, error=InvalidTypeError)
        radii = tuple(sorted(check_number("eps", v, low=0.0, low_inclusive=False) for v in values))
        if len(set(radii)) != len(radii):
            fail("eps", f"distinct radii for norm {norm!r}", list(values))
        grid[norm] = radii
    return grid


def check_headline_radius(grid: Mapping[str, tuple[float, ...]], headline: Any) -> dict[str, float]:
    """The headline radius per norm of a :func:`check_radius_grid` grid: ``headline`` (a dict from
    norm to one radius of its grid) where given, else the (lower) middle value of each grid."""
    chosen = {n: radii[(len(radii) - 1) // 2] for n, radii in grid.items()}
    if headline is None:
        return chosen
    if not isinstance(headline, Mapping):
        fail("headline_eps", "a dict from norm to one radius of its 'eps' grid", headline, error=InvalidTypeError)
    for norm, value in headline.items():
        check_choice("headline_eps", norm, tuple(grid))
        value = check_number("headline_eps", value, low=0.0, low_inclusive=False)
        if value not in grid[norm]:
            fail("headline_eps", f"a radius of the {norm!r} grid {list(grid[norm])}", value)
        chosen[norm] = value
    return chosen


def seeded_generator(seed: int, *parts: Any) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and ``parts`` (the SHA-256 of their text).

    Probes draw from such generators instead of the job's when several jobs must see the same
    randomness (e.g. a summary job reproducing per-eps jobs), whichever process runs them.
    """
    digest = hashlib.sha256("\x00".join(str(p) for p in (seed, *parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def model_state_stamp(model: Any) -> tuple[Any, ...]:
    """Changes whenever a module's parameters or buffers are replaced or modified in place.

    Probes key results cached between their own jobs by it (``()`` for a callable that is not a
    ``torch.nn.Module``).
    """
    if not isinstance(model, torch.nn.Module):
        return ()
    return tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))


class ModelCache(dict):
    """Results a probe computed from a (model, data) pair, reused by its other jobs in this process
    while both objects are alive and the model's weights and buffers are unchanged
    (:func:`model_state_stamp`). It holds weak references, valid only where it was filled, so it
    pickles empty (a probe sent to another process starts with no cache)."""

    def fetch(self, key: Any, model: Any, data: Any, compute: Callable[[], Any]) -> Any:
        """The value stored under ``key`` for this model and data, else ``compute()`` (stored)."""
        stamp = model_state_stamp(model)
        hit = self.get(key)
        if hit is not None and hit[0]() is model and hit[1]() is data and hit[2] == stamp:
            return hit[3]
        value = compute()
        try:
            self[key] = (weakref.ref(model), weakref.ref(data), stamp, value)
        except TypeError:  # a model that cannot be weakly referenced is simply not cached
            pass
        return value

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), ())


# --------------------------------------------------------------------------- figures
def figure_to_svg(fig: Any) -> str:
    """Render a Matplotlib figure to SVG text for inline use, then close it.

    Works on ``matplotlib.figure.Figure`` objects built without pyplot, so no global backend or
    state changes. Text is drawn as paths (and Matplotlib escapes any text it writes into
    comments), ids are salted deterministically, the date is omitted and the XML prolog stripped.

    Parameters
    ----------
    fig : matplotlib.figure.Figure

    Returns
    -------
    str
        Text starting with ``<svg``.
    """
    from matplotlib import (
        rc_context,  # lazy: matplotlib is only needed when a figure is drawn
    )

    buffer = io.StringIO()
    try:
        with rc_context({"svg.fonttype": "path", "svg.hashsalt": _SVG_HASH_SALT}):
            fig.savefig(buffer, format="svg", metadata={"Date": None})
    finally:
        _close_figure(fig)
    text = buffer.getvalue()
    # The prolog is invalid inside HTML; the RDF metadata only names the creator.
    text = _SVG_METADATA.sub("", text[text.find("<svg"):])
    return text.strip()


def _close_figure(fig: Any) -> None:
    # Only a figure made by pyplot is tracked globally; look for pyplot without importing it.
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
    fig.clear()
