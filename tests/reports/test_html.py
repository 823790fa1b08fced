"""report.html: content, escaping of untrusted text, self-containment, edge cases."""

import re
from pathlib import Path

import pytest
from synthetic_run import INJECTION, synthetic_run

from lucid_eval.reports import build_report, write_run_tables

IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]*)\"")


def _report(tmp_path: Path, **changes) -> str:
    frames = {**synthetic_run(), **changes}
    write_run_tables(tmp_path, **frames)
    path = build_report(tmp_path)
    assert path == tmp_path / "report.html"
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The report of the default synthetic run, built once for the read-only checks."""
    return _report(tmp_path_factory.mktemp("run"))


def test_report_has_every_section_and_verdicts(html: str) -> None:
    for anchor in ("summary", "metrics", "comparison", "plots", "flips", "rejected"):
        assert f'id="{anchor}"' in html
    for text in ("torch-cpu", "ort-cpu-int8", "CPUExecutionProvider", "1234", "/data/corpus.jsonl", "AMD EPYC 7B13"):
        assert text in html
    assert '<span class="badge pass">PASS</span>' in html
    assert '<span class="badge fail">FAIL</span>' in html
    assert (
        "Not every runtime is shown to match torch-cpu" in html
        and "<strong><bdi>ort-cpu-int8</bdi></strong>: FAIL" in html
    )
    assert "51.25 %" in html and "46.79 % – 55.69 %" in html  # accuracy with its interval
    assert "99.16 %" in html and "tol ≥ 99.0 %" in html and "judged on decisive" in html
    assert "2 flips of 240" in html and "1 of 120" in html  # all and decisive counts are both shown
    assert '<td class="num check inconclusive">' in html  # the int8 agreement check was INCONCLUSIVE
    assert "Does the difference matter?" in html and "not significant (exact McNemar p = 0.625)" in html
    assert "The evidence shows sameness" in html and "NOT VERIFIED" in html  # the verdict legend
    assert "3.10e-05" in html and "not judged" in html
    assert len(IMG_SRC.findall(html)) == 3


def test_untrusted_text_is_escaped(html: str) -> None:
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    assert "&lt;/td&gt;&lt;script&gt;alert(3)" in html  # rejected raw line
    assert "<script" not in html.lower()  # neither injected nor in the template: the page needs no JS
    assert "onerror=alert" not in html.replace("&lt;img src=x onerror=alert(2)&gt;", "")
    assert INJECTION not in html


def test_report_loads_nothing_from_the_network(html: str) -> None:
    assert not re.search(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:[a-z]+:)?//""", html, re.I)
    assert not re.search(r"url\(|@import|<link\b|<iframe\b|<object\b|<embed\b", html, re.I)
    assert all(src.startswith("data:image/png;base64,") for src in IMG_SRC.findall(html))
    assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', html))
    # The only "https://" is the corpus text in a flip, escaped, never an attribute.
    assert html.count("https://") == html.count("&lt;a href=&#34;https://example.com/x&#34;&gt;")


def test_flips_are_capped_with_a_note(tmp_path: Path) -> None:
    html = _report(tmp_path, **{k: v for k, v in synthetic_run(n_flips=250).items() if k == "flips"})
    assert "Showing the first 200 of 250" in html
    assert html.count('class="tok changed"') == 200


def test_corpus_without_nsp_labels(tmp_path: Path) -> None:
    html = _report(tmp_path, **synthetic_run(nsp_labels=False))
    assert "Metrics per runtime" in html and len(IMG_SRC.findall(html)) == 3
    nsp_loss_not_judged = '<td class="num check na"><span class="v">—</span><span class="sub">tol |Δ| ≤'
    assert html.count(nsp_loss_not_judged) == 2


def test_report_renders_recorded_verdicts_and_never_rejudges(tmp_path: Path) -> None:
    """The page shows the judge's verdicts from comparison.csv, even where its numbers look otherwise."""
    frames = synthetic_run()
    examples = frames["examples"].assign(max_abs_mlm_logit_diff=0.0, failed=False)
    comparison = frames["comparison"].assign(verdict=["FAIL", "INCONCLUSIVE"], verdict_reasons=["recorded FAIL", ""])
    metrics = frames["metrics"].assign(verdict=["REFERENCE", "FAIL", "INCONCLUSIVE"])
    html = _report(tmp_path, examples=examples, comparison=comparison, metrics=metrics)
    assert len(IMG_SRC.findall(html)) == 3
    rows = html.split('id="comparison"')[1].split("<tbody>")[1].split("</tbody>")[0]
    assert '<span class="badge pass">PASS</span>' not in rows and '<span class="badge fail">FAIL</span>' in rows
    assert "<strong><bdi>ort-cpu</bdi></strong>: FAIL" in html and "recorded FAIL" in html


def test_fallback_is_never_shown_as_passed(tmp_path: Path) -> None:
    frames = synthetic_run()
    comparison = frames["comparison"].assign(verdict=["FALLBACK", "FAIL"])
    metrics = frames["metrics"].assign(verdict=["REFERENCE", "FALLBACK", "FAIL"],
                                       fallback=["", "CUDAExecutionProvider was requested but ...", ""])  # fmt: skip
    html = _report(tmp_path, comparison=comparison, metrics=metrics)
    assert '<span class="badge warn">FALLBACK</span>' in html and "CUDAExecutionProvider was requested" in html
    assert "All 2 runtimes match" not in html


def test_reference_only_run(tmp_path: Path) -> None:
    frames = synthetic_run()
    html = _report(
        tmp_path,
        metrics=frames["metrics"].iloc[:1],
        comparison=frames["comparison"].iloc[:0],
        examples=frames["examples"].query("runtime == 'torch-cpu'"),
        flips=frames["flips"].iloc[:0],
        rejected=None,
    )
    assert "Only the reference runtime was scored." in html
    assert "No prediction differs" in html and "No rows were rejected." in html
    assert len(IMG_SRC.findall(html)) == 2  # no logit-difference plot without a compared runtime


def test_agreement_never_rounds_up_to_perfect(tmp_path: Path) -> None:
    frames = synthetic_run()
    comparison = frames["comparison"].assign(
        mlm_agreement=[0.99999, 0.9875], n_mlm_flips=[1, 2], mlm_decisive_agreement=[0.99999, 0.9875]
    )
    html = _report(tmp_path, comparison=comparison)
    assert "99.99 %" in html and "100.00 %" not in html
