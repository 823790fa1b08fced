"""report.html in a real browser: it renders, logs no console errors, and runs no injected code."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lucid_eval.reports import build_report, write_run_tables

sys.path.insert(0, str(Path(__file__).parent))  # shared synthetic run; this folder has no conftest
from test_tables import synthetic_run  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[2] / "reports" / "test-artifacts"
# Would mark <body> if the browser ever ran it; escaped, it is only text.
PWN = "<img src=x onerror=\"document.body.setAttribute('data-pwned','yes')\">"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
]


def _chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
    if not found:
        pytest.skip("chromium is not installed (apt-get install chromium); browser checks skipped")
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    frames = synthetic_run()
    frames["flips"].loc[1, "text_b"] = PWN
    write_run_tables(run_dir, **frames)
    return build_report(run_dir)


def _chromium_run(report: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [_chromium(), *FLAGS, f"--user-data-dir={tmp / 'profile'}", *extra, report.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line and report.as_uri() in line]
    assert not console, "console messages from the report:\n" + "\n".join(console)
    return result


def test_report_screenshot(report: Path, tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    result = _chromium_run(report, tmp_path, f"--screenshot={png}", "--window-size=1280,2400")
    assert png.is_file(), result.stderr[-2000:]
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 50_000  # a blank page compresses to a few KB
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(png, ARTIFACTS / "report.png")


def test_report_dom(report: Path, tmp_path: Path) -> None:
    dom = _chromium_run(report, tmp_path, "--dump-dom").stdout
    assert dom.count("<table") >= 5
    assert dom.count("<img") == 3
    assert "<script" not in dom.lower()  # the injected script stayed text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "data-pwned" in dom and 'data-pwned="yes"' not in dom  # the onerror handler never ran
