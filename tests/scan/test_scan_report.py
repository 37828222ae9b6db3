"""The HTML report: self-contained, escaped, one generic section per probe in the store."""

from __future__ import annotations

import os
import re
from collections import Counter

import pytest

from robustlab._constants import REPORT_FILENAME, STORE_FILENAME
from robustlab.errors import DataNotFoundError, UnknownNameError
from robustlab.scan import (
    Figure,
    ProbeResult,
    ResultRow,
    ResultsStore,
    Table,
    build_probe,
    register_section,
    run_scan,
    write_report,
)
from robustlab.scan import report as report_module
from robustlab.scan.report import format_value
from scan_testkit import PredictInput, RecordingProbe, predicted_dataset

EVIL = "<script>alert(1)</script>"
EVIL_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
SVG = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
       '<defs><clipPath id="clip1"><rect width="1" height="1"/></clipPath></defs>'
       '<g clip-path="url(#clip1)"><use xlink:href="#clip1"/></g></svg>')


def _store_probe(tmp_path, probe, result, *, job=None, key=None, title=None):
    with ResultsStore(tmp_path) as store:
        run_id = store.start_run(key or {"k": 1}, model_info={"name": "m"}, data_info={"name": "d"})
        if title is not None:
            store.add_probe(run_id, probe, title=title, params={"level": EVIL}, position=0)
        store.write_job(run_id, probe, job or {}, result, seconds=0.5)
    return run_id


def _evil_scan(tmp_path):
    data = predicted_dataset([0, 1, 2, 1], [0, 1, 2, 2], class_names=["ok", EVIL, "c"], name=f"data {EVIL}")
    failing = RecordingProbe(name="failing", num_jobs=1, fail_jobs=(0,), message=f"exploded {EVIL}")
    summary = run_scan(PredictInput(3), data, [build_probe("clean"), failing], out_dir=tmp_path,
                       model_info={"name": f"net {EVIL}", "path": "<img src=x onerror=alert(1)>"},
                       progress=False)
    return summary.report_path.read_text(encoding="utf-8")


def test_report_escapes_every_user_string(tmp_path):
    html = _evil_scan(tmp_path)
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()
    assert html.count(EVIL_ESCAPED) >= 5  # model name, data name, class names, error message, table
    assert f"exploded {EVIL_ESCAPED}" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_report_is_self_contained(tmp_path):
    html = _evil_scan(tmp_path)
    assert not re.search(r"<link\b|<script\b|<iframe\b|@import", html, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", html, re.I)
    for target in re.findall(r"\b(?:src|href)\s*=\s*[\"']([^\"']*)", html, re.I):
        assert target.startswith(("#", "data:")), target
    assert "<style>" in html and "<svg" in html


def test_report_sections_per_probe_and_headline(tmp_path):
    html = _evil_scan(tmp_path)
    assert 'id="summary"' in html and 'href="#probe-clean"' in html and 'id="probe-clean"' in html
    assert 'id="probe-failing"' in html and "1 failed" in html
    headline = html[html.index("Headline metrics"):html.index('id="probe-clean"')]
    assert "accuracy" in headline and "0.7500" in headline


def test_unknown_probe_gets_a_generic_section(tmp_path):
    result = ProbeResult(
        rows=(ResultRow("widgets", 3.0, unit="w"), ResultRow("wobble", 0.125, params={"eps": 0.5}),
              ResultRow("wobble", 0.25, params={"eps": 1.0})),
        tables=(Table("xyz_table", "XYZ table", ("name", "count"), (("alpha", 7),)),),
        figures=(Figure("xyz_fig", "XYZ figure", SVG),),
        summary="xyz summary sentence",
    )
    _store_probe(tmp_path, "xyz", result, job={"part": "one"})  # no add_probe: title falls back to name
    html = write_report(tmp_path).read_text()
    section = html[html.index('id="probe-xyz"'):]
    for text in ("widgets", "wobble", "XYZ table", "alpha", "XYZ figure", "xyz summary sentence", "0.125"):
        assert text in section, text
    assert "<th>part</th><th>eps</th>" in section  # job key and row params both shown
    assert 'href="#probe-xyz"' in html


def test_sections_in_stable_order(tmp_path):
    with ResultsStore(tmp_path) as store:
        run_id = store.start_run({"k": 1})
        for name in ("zeta", "clean", "alpha"):
            store.write_job(run_id, name, {}, ProbeResult(rows=(ResultRow("m", 1.0),)), seconds=0.1)
    html = write_report(tmp_path).read_text()
    positions = [html.index(f'id="probe-{name}"') for name in ("clean", "alpha", "zeta")]
    assert positions == sorted(positions)


def test_probe_params_are_escaped(tmp_path):
    _store_probe(tmp_path, "xyz", ProbeResult(rows=(ResultRow("m", 1.0),)), title=f"Title {EVIL}")
    html = write_report(tmp_path).read_text()
    assert "<script" not in html.lower()
    assert f"Title {EVIL_ESCAPED}" in html and f"level={EVIL_ESCAPED}" in html


def test_figure_ids_are_unique_in_the_page(tmp_path):
    result = ProbeResult(figures=(Figure("a", "A", SVG), Figure("b", "B", SVG)))
    _store_probe(tmp_path, "xyz", result)
    html = write_report(tmp_path).read_text()
    ids = Counter(re.findall(r'\bid="([^"]+)"', html))
    assert ids and max(ids.values()) == 1
    # References follow their ids.
    for ref in re.findall(r'url\(#([^)]+)\)|href="#([^"]+)"', html):
        target = ref[0] or ref[1]
        assert target in ids, target


def test_custom_section_template(tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "_SECTION_TEMPLATES", {})
    register_section("xyz", '<p class="custom">{{ section.title }}: {{ section.results|length }} rows '
                            '{{ section.results[0].params["who"] }}</p>')
    _store_probe(tmp_path, "xyz", ProbeResult(rows=(ResultRow("m", 1.0, params={"who": EVIL}),)))
    html = write_report(tmp_path).read_text()
    assert f'<p class="custom">xyz: 1 rows {EVIL_ESCAPED}</p>' in html
    assert "<script" not in html.lower()


def test_write_report_picks_run_and_writes_atomically(tmp_path, monkeypatch):
    first = _store_probe(tmp_path, "one", ProbeResult(rows=(ResultRow("m", 1.0),)), key={"k": 1})
    second = _store_probe(tmp_path, "two", ProbeResult(rows=(ResultRow("m", 2.0),)), key={"k": 2})
    path = write_report(tmp_path)
    assert path == tmp_path / REPORT_FILENAME
    assert second in path.read_text() and 'id="probe-two"' in path.read_text()
    html = write_report(tmp_path / STORE_FILENAME, run_id=first).read_text()
    assert first in html and 'id="probe-one"' in html and 'id="probe-two"' not in html
    with pytest.raises(UnknownNameError, match="run_id"):
        write_report(tmp_path, run_id="nope")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        write_report(tmp_path)
    monkeypatch.undo()
    assert path.read_text() == html  # the old report is intact
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files left


def test_write_report_needs_a_store(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        write_report(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value, text", [
    (0.75, "0.7500"), (1.0, "1"), (1234567.0, "1,234,567"), (12345.6, "12,346"), (3.14159, "3.142"),
    (0.000123, "0.000123"), (float("nan"), "—"), (float("inf"), "∞"),
])
def test_format_value(value, text):
    assert format_value(value) == text


def test_scorecard_has_a_tile_per_headline_with_meter_and_direction(tmp_path):
    rows = (ResultRow("robust_accuracy", 0.25, {"eps": 0.1}, headline=True),
            ResultRow("ece", 0.125, headline=True),
            ResultRow("noise_rate", 0.5, headline=True),
            ResultRow("seconds_per_example", 3.0, unit="ms", headline=True),
            ResultRow("accuracy", 0.75))  # not a headline: no tile
    _store_probe(tmp_path, "custom", ProbeResult(rows=rows), title="Custom")
    html = write_report(tmp_path).read_text(encoding="utf-8")
    card = html[html.index('class="scorecard"'):html.index('class="cards"')]
    tiles = card.split('class="tile"')[1:]
    assert len(tiles) == 4
    robust, ece, noise, ms = tiles
    assert "robust accuracy" in robust and "width: 25.0%" in robust and "higher is better" in robust
    assert "width: 12.5%" in ece and 'class="meter lower"' in ece and "lower is better" in ece
    assert "width: 50.0%" in noise and "better" not in noise  # a direction the name does not say
    assert "meter" not in ms and "<small>ms</small>" in ms  # values with a unit get no meter
    assert all('href="#probe-custom"' in t for t in tiles)
