"""The "Where does it diverge?" section of report.html: shown when RUN_DIR/localize holds a
localisation, escaped and self-contained like the rest of the page, a note when it is stale."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from synthetic_run import synthetic_run

from lucid_eval.reports import build_report, write_run_tables
from lucid_eval.reports.localize import RUN_FOLDER

IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]*)\"")
HOSTILE = "ort-cpu:<script>alert(1)</script>\u202e$\\frac$"  # a foreign graph's name comes from its file name
STARTED = "2025-01-01T10:00:00+00:00"  # synthetic_run's


def _rows(runtime: str, *, flagged: str | None = None, nsp: bool = True) -> list[dict]:
    names = ["bert.embeddings", "bert.encoder.layer.0.attention", "bert.encoder.layer.0", "cls.predictions.transform",
             "cls.predictions", "bert.pooler", "cls.seq_relationship"]  # fmt: skip
    depths, branches = [1, 2, 3, 4, 5, 4, 5], ["trunk"] * 3 + ["mlm"] * 2 + ["nsp"] * 2
    rows = []
    for k, (name, depth, branch) in enumerate(zip(names, depths, branches, strict=True)):
        absent = branch == "nsp" and not nsp
        rows.append({
            "runtime": runtime, "boundary": name, "label": name.split(".")[-1], "layer": 0 if "layer" in name else None,
            "depth": depth, "branch": branch, "tensor": "" if absent else f"t{k}",
            "status": "absent" if absent else "mapped",
            "how_found": "absent: the graph has no NSP head" if absent else f"node <img src=x onerror=alert({k})>",
            "max_abs": None if absent else 10.0 ** (k - 8), "rel_err": None if absent else 10.0 ** (k - 9),
            "cosine": None if absent else 1.0, "positions": 0 if absent else 100, "share": 1e-6 * depth,
            "flagged": name == flagged,
        })  # fmt: skip
    return rows


def write_localization(run_dir: Path, *, started: str | None = STARTED) -> Path:
    """RUN_DIR/localize as `lucid-eval localize --examples-from RUN_DIR` writes it: int8 flagged at
    layer 0's attention, and a foreign graph with a hostile name and no NSP head."""
    out = run_dir / RUN_FOLDER
    out.mkdir(parents=True)
    table = pd.DataFrame(_rows("ort-cpu-int8", flagged="bert.encoder.layer.0.attention") + _rows(HOSTILE, nsp=False))
    table.to_csv(out / "localize.csv", index=False)
    info = {
        "kind": "lucid-eval localize", "command": "lucid-eval localize --examples-from run", "pairs": 3, "seed": 0,
        "max_length": 128, "reference": "torch-cpu", "session": "ONNX Runtime ORT_ENABLE_ALL", "rule": "R x d / D",
        "export": None, "checkpoint": {"path": "/ckpt", "sha256": "c" * 64},
        "corpus": {"path": "/data/pairs.tsv", "sha256": "d" * 64},
        "run": {"dir": str(run_dir), "started": started} if started else None,
        "onnx_graphs": {HOSTILE: {"path": "/graphs/<b>evil</b>.onnx", "sha256": "e" * 64, "precision": "fp32",
                                  "inputs": {"input_ids": "int64"}, "how": {"logits": "by name (logits)"},
                                  "nsp_output": None, "warnings": []}},
        "runtimes": [{"text": "ort-cpu-int8 (int8, export FAIL, budget 0.25): first over its share "
                              "bert.encoder.layer.0.attention"},
                     {"text": f"{HOSTILE} (fp32, foreign graph): no NSP head in this graph"}],
    }  # fmt: skip
    (out / "localize.json").write_text(json.dumps(info))
    return out


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> str:
    run_dir = tmp_path_factory.mktemp("run")
    write_run_tables(run_dir, **synthetic_run())
    write_localization(run_dir)
    return build_report(run_dir).read_text(encoding="utf-8")


def test_the_section_shows_every_runtimes_boundaries_and_the_plot(html: str) -> None:
    assert '<section id="localize">' in html and '<a href="#localize">Where does it diverge?</a>' in html
    assert html.index('id="flips"') < html.index('id="localize"') < html.index('id="rejected"')
    assert "3 pairs, those with a flipped prediction in this run" in html
    assert '<tr class="flagged"><td><code>bert.encoder.layer.0.attention</code>' in html
    assert html.count('class="flagged"') == 1 and html.count(">absent</td>") == 2
    assert "tr.flagged td" in html and "td.how" in html  # its styles are in the page
    assert "first over its share bert.encoder.layer.0.attention" in html
    sources = IMG_SRC.findall(html)
    assert len(sources) == 4 and all(src.startswith("data:image/png;base64,") for src in sources)


def test_untrusted_names_and_node_names_are_escaped(html: str) -> None:
    assert "<script" not in html.lower() and "\u202e" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\u202e$\\frac$" in html
    assert '<td class="how"><bdi>node &lt;img src=x onerror=alert(1)&gt;</bdi></td>' in html
    assert "/graphs/&lt;b&gt;evil&lt;/b&gt;.onnx" in html and "<b>evil" not in html


def test_no_localisation_no_section_and_a_stale_one_is_a_note(tmp_path: Path) -> None:
    write_run_tables(tmp_path / "plain", **synthetic_run())
    page = build_report(tmp_path / "plain").read_text(encoding="utf-8")
    assert 'id="localize"' not in page and 'href="#localize"' not in page
    write_run_tables(tmp_path / "stale", **synthetic_run())
    write_localization(tmp_path / "stale", started="2024-12-31T09:00:00+00:00")
    page = build_report(tmp_path / "stale").read_text(encoding="utf-8")
    assert '<section id="localize">' in page and "an earlier run in this directory" in page
    assert "bert.encoder.layer.0.attention" not in page and len(IMG_SRC.findall(page)) == 3
    (tmp_path / "stale" / RUN_FOLDER / "localize.json").write_text("{not json")
    page = build_report(tmp_path / "stale").read_text(encoding="utf-8")
    assert "localize/ could not be read (JSONDecodeError" in page


def test_the_report_with_the_section_needs_neither_torch_nor_onnxruntime(tmp_path: Path) -> None:
    write_run_tables(tmp_path, **synthetic_run())
    write_localization(tmp_path)
    code = (
        "import sys; from lucid_eval.reports import build_report; build_report(sys.argv[1]); "
        "loaded = sorted(m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules); "
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'id="localize"' in (tmp_path / "report.html").read_text(encoding="utf-8")
