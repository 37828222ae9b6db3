"""One report comparing several scan runs side by side.

``robustlab report RUN_A RUN_B ...`` reads each run's results store and renders a single
self-contained page: every probe's headline numbers in one table (the best model per row marked),
the curves the probes stored (robust accuracy over eps, accuracy over corruption severity, ...)
overlaid per model, and a short plain-language verdict per model.

Like the single-run report, nothing here knows particular probes: rows are compared by
``(probe, metric, params)``, and a curve is any stored metric with exactly one numeric parameter
taking several values. Whether higher or lower is better is read from the metric name
(:data:`~robustlab._constants.COMPARE_HIGHER_IS_BETTER` / ``COMPARE_LOWER_IS_BETTER`` tokens);
metrics with neither are shown but never called better or worse.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from robustlab._checks import fail
from robustlab._constants import (
    COMPARE_CLOSE_PP,
    COMPARE_MAX_CURVES,
    COMPARE_REPORT_FILENAME,
)
from robustlab._io import atomic_write_text
from robustlab.errors import InvalidParameterError, OutputDirError
from robustlab.scan.probe import job_label
from robustlab.scan.report import _environment, _probe_order, format_value, metric_direction, scope_svg_ids
from robustlab.scan.store import ResultRecord, ResultsStore, RunRecord

__all__ = ["ComparedRun", "ComparisonRow", "Comparison", "compare_runs", "render_comparison",
           "write_comparison", "metric_direction"]


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class ComparedRun:
    """One run in a comparison: its label (column header), folder and stored results."""

    label: str
    path: Path
    run: RunRecord
    results: tuple[ResultRecord, ...]
    probe_titles: dict[str, str]


@dataclass(frozen=True)
class ComparisonRow:
    """One headline number across runs.

    ``values[i]`` is run ``i``'s value (``None`` if that run did not store it); ``direction`` is
    +1 (higher is better), -1 (lower is better) or 0 (unknown); ``best`` holds the indices of the
    best runs (empty when the direction is unknown or fewer than two runs have a value).
    """

    probe: str
    probe_title: str
    metric: str
    params: str
    unit: str
    values: tuple[float | None, ...]
    direction: int
    best: tuple[int, ...]


@dataclass(frozen=True)
class Comparison:
    runs: tuple[ComparedRun, ...]
    rows: tuple[ComparisonRow, ...]
    curves: tuple[tuple[str, str], ...]  # (title, svg)
    verdicts: tuple[tuple[str, str], ...]  # (label, paragraph)


# --------------------------------------------------------------------------- reading
def _labels(paths: Sequence[Path], runs: Sequence[RunRecord], labels: Sequence[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(paths):
            fail("labels", f"one label per run ({len(paths)})", f"{len(labels)} labels", describe_got=False)
        out = [str(x) for x in labels]
    else:
        # the run folder says what differs between runs (method, seed, ...); the model name often not
        out = [p.name if p.suffix != ".sqlite" else p.parent.name for p in paths]
    seen: dict[str, int] = {}
    unique = []
    for label in out:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return unique


def _read(path: Path) -> tuple[RunRecord, list[ResultRecord], dict[str, str]]:
    with ResultsStore(path, create=False) as store:
        run = store.run()
        titles = {p.probe: p.title for p in store.probes(run.run_id)}
        return run, store.results(run.run_id), titles


def _key(r: ResultRecord) -> tuple[str, str, str]:
    params = {**r.job, **r.params}
    return r.probe, r.metric, json.dumps(params, sort_keys=True)


def _finite(v: float | None) -> bool:
    return v is not None and not math.isnan(v)


def _best(values: Sequence[float | None], direction: int) -> tuple[int, ...]:
    present = [(i, v) for i, v in enumerate(values) if _finite(v)]
    if direction == 0 or len(present) < 2:
        return ()
    target = max(v for _, v in present) if direction > 0 else min(v for _, v in present)
    return tuple(i for i, v in present if v == target)


def _rows(runs: Sequence[ComparedRun]) -> list[ComparisonRow]:
    keys: dict[tuple[str, str, str], tuple[ResultRecord, str]] = {}
    for run in runs:
        for r in run.results:
            if r.headline and _key(r) not in keys:
                keys[_key(r)] = (r, run.probe_titles.get(r.probe, r.probe))
    lookup = [{_key(r): r.value for r in run.results} for run in runs]
    order = {name: i for i, name in enumerate(_probe_order({k[0] for k in keys}))}
    rows = []
    for key in sorted(keys, key=lambda k: (order[k[0]], k[1], k[2])):
        record, title = keys[key]
        values = tuple(look.get(key) for look in lookup)
        direction = metric_direction(record.metric)
        params = {**record.job, **record.params}
        rows.append(ComparisonRow(record.probe, title, record.metric, job_label(params) if params else "",
                                  record.unit, values, direction, _best(values, direction)))
    return rows


# --------------------------------------------------------------------------- curves
def _curve_groups(runs: Sequence[ComparedRun], headline_metrics: set[tuple[str, str]]
                  ) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(probe, metric, x parameter, fixed params) of every curve worth overlaying."""
    found: dict[tuple[str, str, str, str], set[float]] = {}
    for run in runs:
        for r in run.results:
            if (r.probe, r.metric) not in headline_metrics:
                continue
            params = {**r.job, **r.params}
            numeric = [k for k, v in params.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if len(numeric) != 1:
                continue
            x = numeric[0]
            fixed = json.dumps({k: v for k, v in params.items() if k != x}, sort_keys=True)
            found.setdefault((r.probe, r.metric, x, fixed), set()).add(float(params[x]))
    groups = [(p, m, x, json.loads(f)) for (p, m, x, f), xs in found.items() if len(xs) >= 2]
    order = {name: i for i, name in enumerate(_probe_order({g[0] for g in groups}))}
    groups.sort(key=lambda g: (order[g[0]], g[1], g[2], json.dumps(g[3], sort_keys=True)))
    return groups[:COMPARE_MAX_CURVES]


def _curve_svg(runs: Sequence[ComparedRun], probe: str, metric: str, x: str,
               fixed: dict[str, Any], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from robustlab.scan.probe import figure_to_svg

    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for run in runs:
        points = []
        for r in run.results:
            params = {**r.job, **r.params}
            if r.probe == probe and r.metric == metric and x in params and \
                    {k: v for k, v in params.items() if k != x} == fixed and _finite(r.value):
                points.append((float(params[x]), r.value))
        if points:
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=run.label)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        return figure_to_svg(fig)
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- verdicts
def _describe(row: ComparisonRow) -> str:
    return f"{row.metric} ({row.params})" if row.params else row.metric


def _verdicts(runs: Sequence[ComparedRun], rows: Sequence[ComparisonRow]) -> list[tuple[str, str]]:
    ranked = [r for r in rows if r.direction != 0 and sum(_finite(v) for v in r.values) >= 2]
    out = []
    for i, run in enumerate(runs):
        if not ranked:
            out.append((run.label, "No headline metric with a known better direction to compare."))
            continue
        best = [r for r in ranked if i in r.best]
        behind = []
        for r in ranked:
            v = r.values[i]
            if not _finite(v) or i in r.best:
                continue
            lead = r.values[r.best[0]]
            gap = abs(lead - v)  # type: ignore[operator]
            behind.append((gap, r, lead))
        behind.sort(key=lambda t: -t[0])
        parts = []
        if best:
            parts.append(f"best of {len(runs)} on " + ", ".join(
                f"{_describe(r)} = {format_value(r.values[i])}" for r in best[:4]) +
                (f" and {len(best) - 4} more" if len(best) > 4 else "") + ".")
        clear = [(g, r, lead) for g, r, lead in behind if g * (100 if _ratio(r) else 1) > COMPARE_CLOSE_PP]
        if clear:
            parts.append("Clearly behind on " + ", ".join(
                f"{_describe(r)} ({format_value(r.values[i])} vs {format_value(lead)} for "
                f"{runs[r.best[0]].label})" for _, r, lead in clear[:3]) + ".")
        elif behind:
            parts.append("Within a point of the best everywhere else.")
        missing = [r for r in rows if not _finite(r.values[i])]
        if missing:
            parts.append(f"Not measured: {len(missing)} of the {len(rows)} headline numbers.")
        text = " ".join(parts) if parts else "Never the best on a ranked headline number."
        if not best and parts:
            text = "Never the best on a ranked headline number. " + text
        out.append((run.label, text[0].upper() + text[1:]))
    return out


def _ratio(row: ComparisonRow) -> bool:
    """Values in [0, 1] without a unit are fractions; the verdict compares them in points."""
    return row.unit == "" and all(not _finite(v) or 0.0 <= v <= 1.0 for v in row.values)  # type: ignore[operator]


# --------------------------------------------------------------------------- public API
def compare_runs(paths: Sequence[str | os.PathLike[str]], *,
                 labels: Sequence[str] | None = None) -> Comparison:
    """Read several run folders and line up their headline numbers and curves.

    Parameters
    ----------
    paths : sequence of path-like, length >= 1
        Run folders (holding ``results.sqlite``) or the database files themselves.
    labels : sequence of str, optional
        Column headers, one per run; default the run folder names.

    Returns
    -------
    Comparison
    """
    if isinstance(paths, (str, os.PathLike)) or len(paths) == 0:
        fail("paths", "a non-empty list of run folders", paths, error=InvalidParameterError)
    resolved = [Path(p) for p in paths]
    read = [_read(p) for p in resolved]
    names = _labels(resolved, [r[0] for r in read], labels)
    runs = tuple(ComparedRun(label, path, run, tuple(results), titles)
                 for label, path, (run, results, titles) in zip(names, resolved, read))
    rows = _rows(runs)
    headline_metrics = {(r.probe, r.metric) for r in rows}
    curves = []
    for probe, metric, x, fixed in _curve_groups(runs, headline_metrics):
        title_bits = [runs[0].probe_titles.get(probe, probe), metric]
        if fixed:
            title_bits.append(job_label(fixed))
        title = " · ".join(title_bits)
        curves.append((title, _curve_svg(runs, probe, metric, x, fixed, title)))
    return Comparison(runs, tuple(rows), tuple(curves), tuple(_verdicts(runs, rows)))


def render_comparison(comparison: Comparison) -> str:
    """The comparison as one self-contained HTML page."""
    from markupsafe import Markup

    curves = [(title, Markup(scope_svg_ids(svg, f"c{i}-"))) for i, (title, svg) in enumerate(comparison.curves)]
    return _environment().get_template("compare.html.j2").render(
        comparison=comparison, curves=curves,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def write_comparison(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                     labels: Sequence[str] | None = None) -> Path:
    """Compare runs and write the page to ``out`` (a file, or a folder to hold ``compare.html``).

    Returns
    -------
    Path
        The written file (atomically: a reader never sees half a page).
    """
    html = render_comparison(compare_runs(paths, labels=labels))
    dest = Path(out)
    if dest.is_dir() or dest.suffix.lower() not in (".html", ".htm"):
        dest = dest / COMPARE_REPORT_FILENAME
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(dest, html)
    except OSError as exc:
        raise OutputDirError(f"The 'out' parameter must be a writable file or folder. Got {str(dest)!r}: "
                             f"{exc.strerror}.") from None
    return dest
