"""The HTML report: one self-contained file rendered from the results store with Jinja2.

The report knows nothing about particular probes. Each probe present in the store gets a section
built from its stored rows, tables and figures, so adding a probe never means editing this module
or the template. A probe may still register its own section body with :func:`register_section`
(a Jinja template, rendered with the same auto-escaping environment).

Every user-supplied string (model and data descriptions, class names, params, errors) is escaped
by Jinja's autoescape. Figures are SVG made by Matplotlib, which escapes the text it writes; they
are inserted as markup, with their ids prefixed so several figures can share one page.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from robustlab._checks import fail
from robustlab._constants import (
    COMPARE_HIGHER_IS_BETTER,
    COMPARE_LOWER_IS_BETTER,
    REPORT_FILENAME,
    SCAN_PROBE_ORDER,
)
from robustlab._io import atomic_write_text
from robustlab.errors import OutputDirError
from robustlab.scan.probe import _check_name, job_label
from robustlab.scan.store import (
    FigureRecord,
    JobRecord,
    ResultRecord,
    ResultsStore,
    RunRecord,
    TableRecord,
)

__all__ = ["write_report", "render_report", "register_section"]

#: Longest list shown in full in the run description; longer lists are cut with a count.
_MAX_LIST_ITEMS = 12

_SVG_ID = re.compile(r'\bid="([^"]+)"')
_SVG_REF = re.compile(r'(url\(#|href="#)([^)"]+)')

#: Custom section bodies: probe name -> Jinja template source (see :func:`register_section`).
_SECTION_TEMPLATES: dict[str, str] = {}


# --------------------------------------------------------------------------- view model
@dataclass(frozen=True)
class MetricGroup:
    """Rows of one metric that carry params, shown as a table with one column per param."""

    metric: str
    columns: tuple[str, ...]
    rows: tuple[tuple[tuple[str, ...], str], ...]
    unit: str


@dataclass(frozen=True)
class TableView:
    title: str
    columns: tuple[str, ...]
    numeric: tuple[bool, ...]  # per column: right-aligned when every defined cell is a number
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class FigureView:
    title: str
    svg: Any  # markupsafe.Markup


@dataclass
class Section:
    """Everything the report shows for one probe; also the ``section`` of custom templates."""

    probe: str
    title: str
    anchor: str
    params: dict[str, Any] = field(default_factory=dict)
    jobs_done: int = 0
    failures: list[JobRecord] = field(default_factory=list)
    summaries: list[tuple[str, str]] = field(default_factory=list)  # (job label or "", text)
    scalars: list[tuple[str, str, str]] = field(default_factory=list)
    groups: list[MetricGroup] = field(default_factory=list)
    results: list[ResultRecord] = field(default_factory=list)
    tables: list[TableView] = field(default_factory=list)
    figures: list[FigureView] = field(default_factory=list)
    custom: Any = None


# --------------------------------------------------------------------------- formatting
def format_value(value: float | None) -> str:
    """Readable number: integers as integers, 4 significant digits otherwise, ``—`` for undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:.4g}"
    return f"{value:.4f}" if magnitude >= 1e-3 else f"{value:.3g}"


def format_param(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return format_value(value)
    return json.dumps(value, ensure_ascii=False)


def format_info(value: Any) -> str:
    """One-line text for a model/data description value; long lists are cut with a count."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return format_value(value)
    if isinstance(value, list):
        shown = ", ".join(format_param(v) for v in value[:_MAX_LIST_ITEMS])
        more = f", … ({len(value)} items)" if len(value) > _MAX_LIST_ITEMS else ""
        return f"[{shown}{more}]"
    return format_param(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    return format_value(float(value)) if _is_number(value) else str(value)


def _anchor(name: str, used: set[str]) -> str:
    base = "probe-" + (re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "x")
    anchor, i = base, 2
    while anchor in used:
        anchor, i = f"{base}-{i}", i + 1
    used.add(anchor)
    return anchor


def scope_svg_ids(svg: str, prefix: str) -> str:
    """Prefix every ``id`` and ``#id`` reference, so figures inlined in one page never collide."""
    svg = _SVG_ID.sub(lambda m: f'id="{prefix}{m.group(1)}"', svg)
    return _SVG_REF.sub(lambda m: f"{m.group(1)}{prefix}{m.group(2)}", svg)


# --------------------------------------------------------------------------- sections
def _probe_order(names: Iterable[str]) -> list[str]:
    known = {name: i for i, name in enumerate(SCAN_PROBE_ORDER)}
    return sorted(set(names), key=lambda n: (known.get(n, len(known)), n))


def _metric_views(results: list[ResultRecord]) -> tuple[list[tuple[str, str, str]], list[MetricGroup]]:
    scalars: list[tuple[str, str, str]] = []
    grouped: dict[str, list[tuple[dict[str, Any], ResultRecord]]] = {}
    for r in results:
        # The job key is part of what a value depends on (eps, corruption, ...): show it as params.
        params = {**r.job, **r.params}
        if params:
            grouped.setdefault(r.metric, []).append((params, r))
        else:
            scalars.append((r.metric, format_value(r.value), r.unit))
    return scalars, [_group(metric, items) for metric, items in grouped.items()]


def _group(metric: str, items: list[tuple[dict[str, Any], ResultRecord]]) -> MetricGroup:
    columns: list[str] = []
    for params, _ in items:
        columns += [k for k in params if k not in columns]
    rows = tuple((tuple(format_param(p[c]) if c in p else "—" for c in columns), format_value(r.value))
                 for p, r in items)
    units = {r.unit for _, r in items}
    return MetricGroup(metric, tuple(columns), rows, units.pop() if len(units) == 1 else "")


def _table_view(record: TableRecord) -> TableView:
    numeric = tuple(
        any(_is_number(row[i]) for row in record.rows)
        and all(_is_number(row[i]) or row[i] is None for row in record.rows)
        for i in range(len(record.columns)))
    return TableView(record.title or record.name, record.columns, numeric,
                     tuple(tuple(_cell(v) for v in row) for row in record.rows))


def _figure_views(records: list[FigureRecord], prefix: str) -> list[FigureView]:
    from markupsafe import Markup  # installed with jinja2

    return [FigureView(f.title or f.name, Markup(scope_svg_ids(f.svg, f"{prefix}-f{i}-")))
            for i, f in enumerate(records)]


def _sections(store: ResultsStore, run_id: str) -> list[Section]:
    probes = {p.probe: p for p in store.probes(run_id)}
    jobs, results = store.jobs(run_id), store.results(run_id)
    figures, tables = store.figures(run_id), store.tables(run_id)
    names = _probe_order([*probes, *(j.probe for j in jobs), *(r.probe for r in results),
                          *(f.probe for f in figures), *(t.probe for t in tables)])
    used: set[str] = set()
    sections = []
    for name in names:
        record = probes.get(name)
        anchor = _anchor(name, used)
        own_results = [r for r in results if r.probe == name]
        section = Section(
            probe=name, title=record.title if record else name, anchor=anchor,
            params=record.params if record else {},
            jobs_done=sum(j.status == "done" for j in jobs if j.probe == name),
            failures=[j for j in jobs if j.probe == name and j.status == "failed"],
            summaries=[(job_label(j.job) if j.job else "", j.summary) for j in jobs
                       if j.probe == name and j.status == "done" and j.summary],
            results=own_results,
            tables=[_table_view(t) for t in tables if t.probe == name],
            figures=_figure_views([f for f in figures if f.probe == name], anchor),
        )
        section.scalars, section.groups = _metric_views(own_results)
        sections.append(section)
    return sections


def metric_direction(metric: str) -> int:
    """+1 if higher is better, -1 if lower is better, 0 if the name does not say.

    Read from the metric name's tokens (:data:`~robustlab._constants.COMPARE_HIGHER_IS_BETTER`,
    ``COMPARE_LOWER_IS_BETTER``); "lower" words win (``"robust_error"`` is lower-is-better).
    """
    tokens = set(metric.lower().replace("-", "_").split("_"))
    if tokens & set(COMPARE_LOWER_IS_BETTER):
        return -1
    if tokens & set(COMPARE_HIGHER_IS_BETTER):
        return 1
    return 0


def _headlines(sections: list[Section]) -> list[dict[str, Any]]:
    """Headline rows in report order, with what the scorecard draws.

    ``meter`` is the value as a percentage for unitless values in [0, 1] (ratios: accuracies,
    rates, AUROC, ECE), else ``None``; ``direction`` is :func:`metric_direction`.
    """
    out = []
    for s in sections:
        for r in s.results:
            if r.headline:
                params = {**r.job, **r.params}
                ratio = not r.unit and math.isfinite(r.value) and 0.0 <= r.value <= 1.0
                out.append({"probe": s.title, "anchor": s.anchor, "metric": r.metric,
                            "label": r.metric.replace("_", " "),
                            "params": job_label(params) if params else "", "value": format_value(r.value),
                            "unit": r.unit, "meter": round(100.0 * r.value, 1) if ratio else None,
                            "direction": metric_direction(r.metric)})
    return out


# --------------------------------------------------------------------------- rendering
@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2  # lazy: only the report needs it

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("robustlab.scan", "templates"),
        autoescape=True,  # every string from the store is user-supplied
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(value=format_value, param=format_param, info=format_info, job=job_label)
    return env


def register_section(probe: str, template: str) -> None:
    """Give ``probe`` a custom report section body (replacing the generic metrics/tables/figures).

    Parameters
    ----------
    probe : str
        Probe name as stored.
    template : str
        Jinja template source rendered with auto-escaping; it sees ``section`` (a :class:`Section`).
    """
    _check_name("probe", probe)
    _check_name("template", template)
    _SECTION_TEMPLATES[probe] = template


def _render_custom(sections: list[Section]) -> None:
    from markupsafe import Markup

    env = _environment()
    for s in sections:
        source = _SECTION_TEMPLATES.get(s.probe)
        if source is not None:
            s.custom = Markup(env.from_string(source).render(section=s))


def render_report(store: ResultsStore, *, run_id: str | None = None) -> str:
    """The report of one run (default: the most recent) as an HTML string."""
    run: RunRecord = store.run(run_id)
    sections = _sections(store, run.run_id)
    _render_custom(sections)
    failures = sum(len(s.failures) for s in sections)
    return _environment().get_template("report.html.j2").render(
        run=run, seed=run.config.get("seed"), sections=sections, headlines=_headlines(sections),
        jobs_done=sum(s.jobs_done for s in sections), jobs_failed=failures,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def write_report(path: str | os.PathLike[str], *, run_id: str | None = None) -> Path:
    """Render the report of a run folder (or results file) to ``report.html`` beside the store.

    Parameters
    ----------
    path : path-like
        The run folder holding ``results.sqlite``, or the database file.
    run_id : str, optional
        Which run; default the most recently created in the store.

    Returns
    -------
    Path
        The report, written atomically (a reader never sees a half-written file).
    """
    with ResultsStore(path, create=False) as store:
        html = render_report(store, run_id=run_id)
        dest = store.path.parent / REPORT_FILENAME
    _atomic_write(dest, html)
    return dest


def _atomic_write(dest: Path, text: str) -> None:
    try:
        atomic_write_text(dest, text)
    except OSError as exc:
        fail("path", "a run folder where the report can be written", f"{str(dest)!r} ({exc.strerror})",
             error=OutputDirError, describe_got=False)