"""Probe result types, the probe registry and figure rendering."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from robustlab.errors import InvalidParameterError, InvalidTypeError, UnknownNameError
from robustlab.scan import PROBES, Figure, ProbeResult, ResultRow, Table, build_probe, figure_to_svg
from robustlab.scan.probe import canonical_json, job_label


def test_result_row_normalises_params_to_plain_json():
    row = ResultRow("acc", np.float32(0.5), params={"eps": np.float64(0.25), "sizes": (1, 2)})
    assert row.value == 0.5 and isinstance(row.value, float)
    assert row.params == {"eps": 0.25, "sizes": [1, 2]}
    assert type(row.params["eps"]) is float


@pytest.mark.parametrize("kwargs, error", [
    ({"metric": "", "value": 1.0}, InvalidTypeError),
    ({"metric": "m", "value": "1"}, InvalidTypeError),
    ({"metric": "m", "value": True}, InvalidTypeError),
    ({"metric": "m", "value": 1.0, "params": {"x": object()}}, InvalidTypeError),
    ({"metric": "m", "value": 1.0, "params": {"x": float("nan")}}, InvalidTypeError),
    ({"metric": "m", "value": 1.0, "params": {1: "a"}}, InvalidTypeError),
    ({"metric": "m", "value": 1.0, "params": ["a"]}, InvalidTypeError),
])
def test_result_row_rejects_bad_fields(kwargs, error):
    with pytest.raises(error, match="parameter must be"):
        ResultRow(**kwargs)


def test_probe_result_rejects_duplicates_and_wrong_items():
    row = ResultRow("acc", 0.5, params={"class": "a"})
    with pytest.raises(InvalidParameterError, match="twice"):
        ProbeResult(rows=(row, ResultRow("acc", 0.7, params={"class": "a"})))
    ProbeResult(rows=(row, ResultRow("acc", 0.7, params={"class": "b"})))  # distinct params are fine
    with pytest.raises(InvalidTypeError, match="ResultRow"):
        ProbeResult(rows=({"metric": "acc"},))


def test_figure_refuses_scripts_and_non_svg():
    with pytest.raises(InvalidParameterError, match="script"):
        Figure("f", "t", '<svg><script>alert(1)</script></svg>')
    with pytest.raises(InvalidTypeError, match="<svg"):
        Figure("f", "t", "<div></div>")


def test_table_checks_row_length_and_cells():
    with pytest.raises(InvalidParameterError, match="2 cells"):
        Table("t", "T", ("a", "b"), ((1,),))
    with pytest.raises(InvalidTypeError, match="cells"):
        Table("t", "T", ("a",), (([1],),))
    assert Table("t", "T", ["a"], [[np.int64(3)]]).rows == ((3,),)


def test_build_probe_unknown_name_lists_valid_ones():
    with pytest.raises(UnknownNameError, match="'clean'") as info:
        build_probe("no-such-probe")
    assert "\n" not in str(info.value)
    assert "clean" in PROBES.names()


def test_build_probe_validates_params():
    assert build_probe("clean", batch_size=7).params() == {"batch_size": 7}
    with pytest.raises(InvalidParameterError, match="batch_size"):
        build_probe("clean", batch_size=0)


def test_canonical_json_and_job_label():
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert job_label({}) == "all"
    assert job_label({"norm": "linf", "eps": 0.03}) == "eps=0.03, norm=linf"


def _figure(title: str):
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot([0, 1], [1, 0])
    ax.set_title(title)
    ax.set_xticks([0, 1], labels=[title, "b"])
    return fig


def test_figure_to_svg_is_inline_deterministic_and_escapes_text():
    evil = "<script>alert(1)</script> & --"
    svg = figure_to_svg(_figure(evil))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<?xml" not in svg and "<!DOCTYPE" not in svg and "<metadata" not in svg
    assert "<script" not in svg.lower()
    assert "&lt;script&gt;" in svg  # Matplotlib writes the text, escaped, in a comment
    assert svg == figure_to_svg(_figure(evil))
    Figure("f", "t", svg)  # accepted by the Figure checks


def test_import_does_no_heavy_work():
    code = ("import sys, robustlab.scan as s; "
            "print(sorted(m for m in ('matplotlib', 'matplotlib.pyplot', 'jinja2', 'sklearn', "
            "'robustlab.scan.clean') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
