"""The scan report as a user sees it: a real default scan, opened in headless Chromium.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it when missing), driven by
Playwright with ``executable_path`` -- Playwright's own browser downloads are never used. The page
is opened from ``file://`` with every request other than the page itself refused and recorded, so
"works offline, no external network requests" is checked, not assumed.

Without Chromium the test is skipped with the reason, except under ``CI=true`` where it fails: CI
must run it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from robustlab.cli import main

pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency (pip install -e '.[test]')")

#: Flags for a root, offline, headless Chromium: without the background-networking ones it keeps
#: trying to reach Google's hosts, which this machine's closed network refuses.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
LAPTOP = {"width": 1366, "height": 768}


def _chromium() -> str:
    path = os.environ.get("ROBUSTLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("Debian's chromium is not installed: .ci/run installs it (apt-get install chromium)")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium) -- the browser test needs it")


def _builtin_probes() -> list[str]:
    """The probes robustlab ships (other tests in this process may have registered their own)."""
    from robustlab.scan.probe import BUILTIN_PROBE_MODULES, PROBES

    return [n for n in PROBES.names() if getattr(PROBES.get(n), "__module__", "") in BUILTIN_PROBE_MODULES]


@pytest.fixture(scope="module")
def default_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser-scan") / "run"
    probes = _builtin_probes()
    assert {"clean", "audit", "corruptions", "adversarial", "certified", "calibration", "detection"} <= set(probes)
    assert main(["scan", "--out", str(out), "--probes", ",".join(probes)]) == 0
    report = out / "report.html"
    assert report.is_file()
    return report


def test_report_renders_in_chromium_offline_with_every_figure_visible(default_report, tmp_path):
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    page_url = default_report.resolve().as_uri()
    console_errors: list[str] = []
    page_errors: list[str] = []
    foreign_requests: list[str] = []

    def route(r):
        if r.request.url == page_url or r.request.url.startswith("data:"):
            r.continue_()
        else:  # anything else would be an external asset or a network call
            foreign_requests.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport=LAPTOP)
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.route("**/*", route)
            page.goto(page_url, wait_until="load")

            # Every probe section is there and each shows at least one figure, visibly (drawn SVG
            # with a real size, not display:none or zero height).
            sections = page.eval_on_selector_all(
                "main > section[id^='probe-']",
                """els => els.map(s => ({id: s.id,
                    figures: [...s.querySelectorAll('figure svg')].map(svg => {
                        const r = svg.getBoundingClientRect(), st = getComputedStyle(svg);
                        return {w: r.width, h: r.height, hidden: st.display === 'none' || st.visibility === 'hidden',
                                drawn: svg.querySelectorAll('path, use, image').length};
                    })}))""")
            ids = {s["id"] for s in sections}
            for probe in _builtin_probes():
                assert f"probe-{probe}" in ids, f"no section for the {probe} probe: {sorted(ids)}"
            for s in sections:
                assert s["figures"], f"section {s['id']} has no figure"
                for f in s["figures"]:
                    assert not f["hidden"] and f["w"] > 100 and f["h"] > 50 and f["drawn"] > 0, (s["id"], f)

            # The scorecard heads the page, one tile per headline metric, and links to its section.
            tiles = page.eval_on_selector_all(
                "#summary .scorecard a.tile", "els => els.map(a => [a.getAttribute('href'), a.getBoundingClientRect().top])")
            assert tiles and all(href in {f"#{i}" for i in ids} for href, _ in tiles)
            assert min(top for _, top in tiles) < LAPTOP["height"]  # visible without scrolling

            # Readable on a laptop screen: nothing wider than the window.
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()

    assert not console_errors, console_errors
    assert not page_errors, page_errors
    assert not foreign_requests, foreign_requests
    assert shot.stat().st_size > 10_000  # a real full-page image, kept under the test's tmp_path
