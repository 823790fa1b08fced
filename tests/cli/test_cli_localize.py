"""`lucid-eval localize` end to end on the tiny export and on a graph exported elsewhere, the
flipped examples of a score run localised into that run's report, and its one-line errors."""

import csv
import json
import pydoc_data.topics
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from lucid_eval.cli import main
from lucid_eval.data.pairs import split_sentences
from lucid_eval.files import sha256_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from foreign_graphs import hf_pretraining_graph  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    sents = [s for v in list(pydoc_data.topics.topics.values())[:4] for s in split_sentences(v) if 20 < len(s) < 300]
    path = tmp_path_factory.mktemp("corpus") / "pairs.tsv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t")
        writer.writerow(["id", "text_a", "text_b"])
        writer.writerows([f"p{i}", sents[i], sents[i + 1]] for i in range(12))
    return path


def invoke(tiny_export, corpus, out, *extra):
    args = [
        "localize",
        "--export",
        str(tiny_export),
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--threads",
        "1",
        *extra,
    ]
    return CliRunner().invoke(main, args)


def test_localize_writes_its_outputs_and_names_the_first_flagged_boundary(tiny_export, corpus, tmp_path):
    result = invoke(tiny_export, corpus, tmp_path / "out", "--runtime", "ort-cpu", "--runtime", "ort-cpu-int8",
                    "--n-pairs", "6")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "localising 6 pairs on ort-cpu, ort-cpu-int8 against torch-cpu" in result.output
    assert "bert.encoder.layer.1.attention" in result.output
    assert re.search(r"ort-cpu \(fp32, export PASS, budget 0.0001 = logit tolerance\): no boundary over", result.output)
    assert re.search(r"ort-cpu-int8 \(int8, export [A-Z ]+, budget 0.25 = decisive margin / 2\)", result.output)
    for name in ("localize.csv", "localize.json", "localize.html"):
        assert (tmp_path / "out" / name).is_file()


def test_examples_select_pairs_by_id(tiny_export, corpus, tmp_path):
    result = invoke(tiny_export, corpus, tmp_path / "out", "--runtime", "ort-cpu", "--examples", "p2, p5")
    assert result.exit_code == 0, result.output
    assert "localising 2 pairs" in result.output


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--runtime", "torch-cpu"], "torch-cpu: localize compares ONNX Runtime graphs with the torch-cpu reference"),
        (["--runtime", "ort-gpu"], "unknown runtime 'ort-gpu'"),
        (["--examples", "p1,missing"], "1 of 2 ids are not in"),
        (["--examples", "p1", "--n-pairs", "3"], "--n-pairs selects the corpus's first pairs"),
        (["--tolerance", "int8.nope=1"], "unknown field 'nope'"),
    ],
)
def test_user_errors_are_one_line(tiny_export, corpus, tmp_path, extra, message):
    result = invoke(tiny_export, corpus, tmp_path / "out", *extra)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_refuses_a_folder_of_someone_elses_files(tiny_export, corpus, tmp_path):
    (tmp_path / "report.html").write_text("theirs")
    result = invoke(tiny_export, corpus, tmp_path, "--runtime", "ort-cpu", "--n-pairs", "2")
    assert result.exit_code == 1 and "is not empty (report.html)" in result.output, result.output
    assert (tmp_path / "report.html").read_text() == "theirs"


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "--threads", "1"])
    return result.exit_code, result.output


def test_a_graph_exported_elsewhere_localises_against_a_checkpoint(tiny_checkpoint, tiny_export, corpus, tmp_path):
    graph = hf_pretraining_graph(tiny_checkpoint, tmp_path / "hf.onnx")
    code, output = cli("localize", "--model", str(tiny_checkpoint), "--onnx", str(graph), "--corpus", str(corpus),
                       "--out", str(tmp_path / "out"), "--n-pairs", "4")  # fmt: skip
    assert code == 0, output
    assert "localising 4 pairs on ort-cpu:hf against torch-cpu" in output
    assert "ort-cpu:hf (fp32, foreign graph, budget 0.0001 = logit tolerance): no boundary over its share" in output
    info = json.loads((tmp_path / "out" / "localize.json").read_text())
    assert info["onnx_graphs"]["ort-cpu:hf"]["sha256"] == sha256_file(graph)
    code, output = cli("localize", "--export", str(tiny_export), "--runtime", "ort-cpu", "--onnx", str(graph),
                       "--corpus", str(corpus), "--out", str(tmp_path / "both"), "--n-pairs", "2")  # fmt: skip
    assert code == 0 and "on ort-cpu, ort-cpu:hf against torch-cpu" in output, output


def test_flips_of_a_run_are_localised_into_its_report(tiny_export, corpus, tmp_path):
    run = tmp_path / "run"
    code, output = cli("score", "--export", str(tiny_export), "--corpus", str(corpus), "--runtime", "torch-cpu",
                       "--runtime", "ort-cpu-int8", "--out", str(run))  # fmt: skip
    assert code in (0, 3), output
    flip = {"runtime": "ort-cpu-int8", "kind": "mlm", "position": 3, "text_a": "a", "text_b": "b", "label": "x",
            "reference_prediction": "y", "prediction": "z", "reference_margin": 0.01}  # fmt: skip
    columns = list(pd.read_csv(run / "flips.csv").columns)  # 12 pairs flip nothing: two flips as a run records them
    pd.DataFrame([{**flip, "id": "p5"}, {**flip, "id": "p2"}], columns=columns).to_csv(run / "flips.csv", index=False)
    code, output = cli("localize", "--examples-from", str(run))
    assert code == 0, output
    assert "localising 2 pairs on ort-cpu-int8 against torch-cpu" in output
    assert f"report: {run / 'report.html'} (with this localisation)" in output
    assert (run / "localize" / "localize.html").is_file()
    page = (run / "report.html").read_text(encoding="utf-8")
    assert '<section id="localize">' in page and "2 pairs, those with a flipped prediction in this run" in page
    (run / "report.html").unlink()
    result = CliRunner().invoke(main, ["report", str(run)])
    assert result.exit_code == 0 and 'id="localize"' in (run / "report.html").read_text(encoding="utf-8")
    mine = run / "localize" / "notes.txt"
    (run / "localize" / "localize.json").unlink()
    mine.write_text("keep me")
    code, output = cli("localize", "--examples-from", str(run))
    assert code == 1 and "is not empty" in output and mine.read_text() == "keep me", output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "demo", "--out", "OUT"], "--model needs at least one --onnx graph"),
        (["--export", "EXPORT", "--model", "demo", "--onnx", "GRAPH"], "give --export DIR or --model CHECKPOINT, not both"),
        (["--model", "CKPT", "--onnx", "GRAPH", "--runtime", "ort-cpu", "--out", "OUT"], "with --model only --onnx graphs are localised"),
        (["--export", "EXPORT"], "give --out DIR"),
    ],
)  # fmt: skip
def test_source_mistakes_are_one_line(tiny_checkpoint, tiny_export, corpus, tmp_path, args, message):
    graph = tmp_path / "g.onnx"
    graph.write_bytes((tiny_export / "fp32" / "full.onnx").read_bytes())
    named = {"EXPORT": str(tiny_export), "CKPT": str(tiny_checkpoint), "GRAPH": str(graph), "OUT": str(tmp_path / "o")}
    code, output = cli("localize", *(named.get(a, a) for a in args), "--corpus", str(corpus))
    assert code in (1, 2) and message in output and "Traceback" not in output, output
    assert not (tmp_path / "o").exists()


@pytest.mark.optimum
def test_an_optimum_fill_mask_graph_localises(tiny_checkpoint, corpus, tmp_path):
    """Optimum exports BERT at opset 14: LayerNorm lowered to primitives, no NSP head."""
    exporters = pytest.importorskip(
        "optimum.exporters.onnx", reason="optimum-onnx is not installed (pip install -e '.[optimum]' in its own venv)"
    )
    exporters.main_export(str(tiny_checkpoint), output=tmp_path / "optimum", task="fill-mask")
    code, output = cli("localize", "--model", str(tiny_checkpoint), "--onnx", str(tmp_path / "optimum" / "model.onnx"),
                       "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--n-pairs", "4")  # fmt: skip
    assert code == 0, output
    table = pd.read_csv(tmp_path / "out" / "localize.csv")
    mapped = table[table["status"] == "mapped"]
    assert len(mapped) == 7 and (mapped["max_abs"] <= 1e-4).all(), table[["boundary", "how_found", "max_abs"]]
    assert set(table.loc[table["status"] == "absent", "boundary"]) == {"bert.pooler", "cls.seq_relationship"}
