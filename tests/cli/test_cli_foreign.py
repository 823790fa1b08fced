"""`lucid-eval score --model CKPT --onnx GRAPH`: graphs exported elsewhere, judged against the checkpoint."""

import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from lucid_eval.cli import main
from lucid_eval.files import sha256_file
from lucid_eval.harness.run_info import RunInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "harness"))
from _score_dummy import write_corpus  # noqa: E402
from foreign_graphs import hf_masked_lm_graph, hf_pretraining_graph, ort_optimized  # noqa: E402


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, tiny_checkpoint, tiny_config) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("foreign")
    for folder in ("hf", "opt", "mlm"):
        (root / folder).mkdir()
    plain = hf_pretraining_graph(tiny_checkpoint, root / "hf" / "model.onnx")
    return {
        "plain": plain,
        "optimized": ort_optimized(
            plain, root / "opt" / "model.onnx", tiny_config.num_attention_heads, tiny_config.hidden_size
        ),
        "masked_lm": hf_masked_lm_graph(tiny_checkpoint, root / "mlm" / "fill-mask.onnx"),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "pairs.tsv", 40)


def score(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["score", "--threads", "1", *args])
    return result.exit_code, result.output


def test_third_party_graphs_score_against_the_checkpoint(tmp_path, tiny_checkpoint, graphs, corpus) -> None:
    out = tmp_path / "run"
    onnx = [a for name in ("plain", "optimized", "masked_lm") for a in ("--onnx", str(graphs[name]))]
    code, output = score("--model", str(tiny_checkpoint), *onnx, "--corpus", str(corpus), "--out", str(out))
    assert code == 0, output
    metrics = pd.read_csv(out / "metrics.csv").set_index("runtime")
    names = ["torch-cpu", "ort-cpu:hf/model", "ort-cpu:opt/model", "ort-cpu:fill-mask"]
    assert list(metrics.index) == names and (metrics["verdict"].iloc[1:] == "PASS").all(), output
    assert metrics.at["ort-cpu:fill-mask", "tasks"] == "mlm" and metrics.at["ort-cpu:hf/model", "tasks"] == "mlm nsp"
    assert pd.isna(metrics.at["ort-cpu:fill-mask", "nsp_accuracy"]) and metrics.at["ort-cpu:fill-mask", "n_nsp"] == 0
    comparison = pd.read_csv(out / "comparison.csv", keep_default_na=False).set_index("runtime")
    fill = comparison.loc["ort-cpu:fill-mask"]
    assert fill["nsp_compared"] == 0 and fill["check_nsp_agreement"] == "" and fill["check_mlm_agreement"] == "PASS"
    assert "NSP is not in this graph" in fill["verdict_reasons"]
    assert abs(float(fill["d_mlm_loss"])) <= 1e-4 and float(fill["max_abs_mlm_logit_diff"]) <= 1e-4
    assert "no head" in output and "ort-cpu:fill-mask" in output
    examples = pd.read_csv(out / "examples.csv", keep_default_na=False)
    assert (examples.loc[examples["runtime"] == "ort-cpu:fill-mask", "nsp_pred"] == "").all()
    info = RunInfo.load(out)
    assert info.export is None and info.checkpoint["path"] == str(tiny_checkpoint.resolve())
    assert info.checkpoint["files"]["model.safetensors"] == sha256_file(tiny_checkpoint / "model.safetensors")
    record = info.onnx_graphs["ort-cpu:fill-mask"]
    assert record["sha256"] == sha256_file(graphs["masked_lm"]) and record["nsp_output"] is None
    assert record["how"] == {"logits": "by name (logits)"} and info.runtimes == names
    page = (out / "report.html").read_text()
    assert "no head in this graph" in page and str(graphs["masked_lm"].resolve()) in page


def test_int32_inputs_without_token_types_work_and_are_warned_about(tmp_path, tiny_checkpoint, corpus) -> None:
    """Where both segment embeddings agree, a graph without token_type_ids is the same model."""
    same_types = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, same_types)
    state = load_file(str(same_types / "model.safetensors"))
    types = state["bert.embeddings.token_type_embeddings.weight"]
    state["bert.embeddings.token_type_embeddings.weight"] = torch.stack([types[0], types[0]])
    save_file(state, str(same_types / "model.safetensors"), metadata={"format": "pt"})
    graph = hf_pretraining_graph(same_types, tmp_path / "ids32.onnx", dtype=torch.int32, token_types=False,
                                 output_names=("out0", "out1"))  # fmt: skip
    code, output = score(
        "--model", str(same_types), "--onnx", str(graph), "--corpus", str(corpus), "--out", str(tmp_path / "r")
    )
    assert code == 0 and "has no token_type_ids input" in output, output
    row = pd.read_csv(tmp_path / "r" / "comparison.csv").iloc[0]
    assert row["runtime"] == "ort-cpu:ids32" and row["verdict"] == "PASS", output


def test_user_mistakes_are_one_line_errors(tmp_path, tiny_checkpoint, graphs, corpus) -> None:
    base = ["--corpus", str(corpus), "--out", str(tmp_path / "r")]
    code, output = score("--model", str(tiny_checkpoint), *base)
    assert code == 2 and "--model needs at least one --onnx graph" in output
    code, output = score("--model", str(tiny_checkpoint), "--onnx", str(graphs["plain"]), "--runtime", "ort-cpu", *base)
    assert code == 1 and "only torch runtimes and ONNX graphs run" in output and "Traceback" not in output
    not_bert = tmp_path / "not-bert.onnx"
    not_bert.write_bytes(b"\x08\x07")  # a valid but empty ModelProto: no inputs, no outputs
    code, output = score("--model", str(tiny_checkpoint), "--onnx", str(not_bert), *base)
    assert code == 1 and "input input_ids is missing" in output and "Traceback" not in output
    assert not (tmp_path / "r").exists()


def test_a_graph_asked_for_on_cuda_never_falls_back_silently(tmp_path, tiny_checkpoint, graphs, corpus) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        from lucid_eval.export.sessions import cuda_provider_status

        if cuda_provider_status()[0]:
            pytest.skip("a working CUDA provider: this test is about a machine without one")
    code, output = score("--model", str(tiny_checkpoint), "--onnx", str(graphs["plain"]), "--onnx-device", "cuda",
                         "--corpus", str(corpus), "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 1 and "CUDAExecutionProvider" in output and "Traceback" not in output, output
