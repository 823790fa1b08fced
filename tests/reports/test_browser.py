"""report.html in a real browser: it renders, logs no console errors, and runs no injected code."""

from pathlib import Path

import pytest
from synthetic_run import synthetic_run

from lucid_eval.reports import build_report, write_run_tables

# Would mark <body> if the browser ever ran it; escaped, it is only text.
PWN = "<img src=x onerror=\"document.body.setAttribute('data-pwned','yes')\">"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    frames = synthetic_run()
    frames["flips"].loc[1, "text_b"] = PWN
    write_run_tables(run_dir, **frames)
    return build_report(run_dir)


def test_report_screenshot(report: Path, tmp_path: Path, browser) -> None:
    png = tmp_path / "report.png"
    result = browser(report, f"--screenshot={png}", "--window-size=1280,2400")
    assert png.is_file(), result.stderr[-2000:]
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 50_000  # a blank page compresses to a few KB


def test_report_dom(report: Path, browser) -> None:
    dom = browser(report, "--dump-dom").stdout
    assert dom.count("<table") >= 5
    assert dom.count("<img") == 3
    assert "<script" not in dom.lower()  # the injected script stayed text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "data-pwned" in dom and 'data-pwned="yes"' not in dom  # the onerror handler never ran
