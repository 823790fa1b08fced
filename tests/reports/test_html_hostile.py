"""report.html on hostile corpora: huge ids and labels, bidi overrides, 100 k rejected rows.

The page shows a bounded, isolated excerpt of each user string and caps every list that grows
with the corpus; the CSVs keep everything.
"""

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
from markupsafe import escape
from synthetic_run import synthetic_run

from lucid_eval.reports import build_report, load_run, write_run_tables
from lucid_eval.reports.html import NAME_CHARS, REASON_CHARS, shown


def _report(run_dir: Path, frames: dict) -> str:
    write_run_tables(run_dir, **frames)
    return build_report(run_dir).read_text(encoding="utf-8")


def _bad_label_rows(labels: list[str]) -> pd.DataFrame:
    """Rejected rows as the corpus reader records a bad nsp_label: the value is quoted in the reason."""
    return pd.DataFrame(
        {
            "line": range(2, len(labels) + 2),
            "reason": [f"nsp_label must be 0 or 1, got {label!r}" for label in labels],
            "raw": [json.dumps({"text_a": "a", "text_b": "b", "nsp_label": label}) for label in labels],
        }
    )


def test_shown_truncates_with_a_note_and_spells_out_bidi_controls() -> None:
    assert shown("a" * 3000, 80) == "a" * 80 + "… (+2,920 chars)"
    assert shown("ab", 1) == "a… (+1 char)"
    assert shown("a" * 80, 80) == "a" * 80
    assert shown("evil\u202egpj.exe", 80) == "evil\\u202egpj.exe"
    assert shown("\u2066\u2067\u2068\u2069\u202d\u200f\u061c", 80) == r"\u2066\u2067\u2068\u2069\u202d\u200f\u061c"
    assert shown("שלום world", 80) == "שלום world"  # right-to-left letters are text, isolated by <bdi>
    assert shown("\u202e" * 100, 2) == r"\u202e\u202e… (+98 chars)"  # counts characters of the value


def test_long_id_is_truncated_on_the_page_and_whole_in_the_csvs(tmp_path: Path) -> None:
    long_id = "id-" + "7" * 2997
    frames = synthetic_run()
    frames["flips"].loc[1, "id"] = long_id
    frames["examples"].loc[frames["examples"]["index"] == 1, "id"] = long_id
    html = _report(tmp_path, frames)
    assert f'<td class="mono wrap"><bdi>{long_id[:NAME_CHARS]}… (+2,920 chars)</bdi></td>' in html
    assert "7" * NAME_CHARS not in html
    run = load_run(tmp_path)
    assert run.flips["id"].iloc[1] == long_id
    assert (run.examples.loc[run.examples["index"] == 1, "id"] == long_id).all()


def test_huge_bad_label_is_truncated_on_the_page_and_whole_in_the_csv(tmp_path: Path) -> None:
    label = "L" * 200_000
    frames = synthetic_run()
    rejected = _bad_label_rows([label])
    html = _report(tmp_path, {**frames, "rejected": rejected})
    reason = rejected["reason"].iloc[0]
    assert escape(f"{reason[:REASON_CHARS]}… (+{len(reason) - REASON_CHARS:,} chars)") in html
    assert "L" * REASON_CHARS not in html
    assert len(html) < len(_report(tmp_path / "plain", frames)) + 5_000
    assert load_run(tmp_path).rejected["reason"].iloc[0] == reason


def test_bidi_override_in_corpus_path_is_shown_escaped_and_isolated(tmp_path: Path) -> None:
    path = "/data/invoice_\u202elsnoj.exe"
    frames = synthetic_run()
    info = frames["run_info"]
    frames["run_info"] = replace(info, corpus=replace(info.corpus, path=path),
                                 command=f"lucid-eval score --corpus {path} --runtime torch-cpu")  # fmt: skip
    frames["flips"].loc[1, "label"] = "\u2067mat\u2069"
    html = _report(tmp_path, frames)
    for control in ("\u202e", "\u2067", "\u2069"):
        assert control not in html
    visible = r"/data/invoice_\u202elsnoj.exe"
    assert f"<code><bdi>lucid-eval score --corpus {visible} --runtime torch-cpu</bdi></code>" in html
    assert f"<td><bdi>{visible}</bdi></td>" in html
    assert r"<title>lucid-eval report — invoice_\u202elsnoj.exe</title>" in html
    assert r'<td class="tok"><bdi>\u2067mat\u2069</bdi></td>' in html
    assert load_run(tmp_path).run_info.corpus.path == path


def test_100k_distinct_rejected_rows_keep_the_report_small(tmp_path: Path) -> None:
    n = 100_000
    frames = synthetic_run()
    rejected = _bad_label_rows([f"{i:06d}-" + "x" * 150 for i in range(n)])
    html = _report(tmp_path, {**frames, "rejected": rejected})
    assert len(html.encode("utf-8")) < 1_000_000
    assert "Rejected (100,000)" in html and "100,000 rows of the corpus could not be used" in html
    assert "… and 99,990 other reasons (99,990 rows), all in rejected.csv" in html
    assert "… and 99,980 more rows in rejected.csv." in html
    assert len(load_run(tmp_path).rejected) == n


def test_flips_table_points_to_flips_csv(tmp_path: Path) -> None:
    html = _report(tmp_path, synthetic_run(n_flips=250))
    assert "Showing the first 200 of 250" in html and "… and 50 more rows in flips.csv." in html


def test_a_dollar_in_a_runtime_name_is_drawn_as_typed() -> None:
    """A foreign graph's label comes from its file name; `$` would start matplotlib mathtext."""
    import pandas as pd

    from lucid_eval.reports.plots import accuracy_figure

    columns = (
        "mlm_accuracy",
        "mlm_accuracy_lo",
        "mlm_accuracy_hi",
        "nsp_accuracy",
        "nsp_accuracy_lo",
        "nsp_accuracy_hi",
    )
    metrics = pd.DataFrame({"runtime": ["torch-cpu", r"ort-cpu:a$\frac$"], **{c: [0.5, 0.5] for c in columns}})
    assert accuracy_figure(metrics, "torch-cpu").startswith("data:image/png;base64,")
