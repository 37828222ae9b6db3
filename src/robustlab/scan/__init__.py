"""The robustness scan: Probe protocol, runner, SQLite results store and HTML report.

A :class:`Probe` measures a model on data and returns a :class:`ProbeResult`; :func:`run_scan`
runs every job of every probe and stores each in one transaction (a killed scan resumes where it
stopped); :func:`write_report` renders whatever the store holds into one self-contained HTML file.

Importing this package does no work: built-in probes are imported the first time :data:`PROBES`
is read, and Matplotlib, scikit-learn and Jinja2 only when a probe or report needs them.

Examples
--------
>>> from robustlab.scan import build_probe, run_scan             # doctest: +SKIP
>>> summary = run_scan(model, test_data, [build_probe("clean")], out_dir="runs/demo")  # doctest: +SKIP
>>> summary.report_path                                          # doctest: +SKIP
PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

from robustlab.scan.probe import (
    PROBES,
    Figure,
    Probe,
    ProbeResult,
    ResultRow,
    Table,
    build_probe,
    figure_to_svg,
)
from robustlab.scan.report import register_section, write_report
from robustlab.scan.runner import FailedJob, Headline, ScanSummary, run_scan
from robustlab.scan.store import ResultsStore

__all__ = [
    "Probe",
    "ProbeResult",
    "ResultRow",
    "Figure",
    "Table",
    "PROBES",
    "build_probe",
    "figure_to_svg",
    "ResultsStore",
    "run_scan",
    "ScanSummary",
    "Headline",
    "FailedJob",
    "write_report",
    "register_section",
]
