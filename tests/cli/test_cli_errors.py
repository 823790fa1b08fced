"""Every user mistake ends in one line that says what is wrong, never in a traceback."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from lucid_eval.cli import main


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert isinstance(result.exception, SystemExit), f"traceback for {args}:\n{result.output}"  # no uncaught error
    assert result.exit_code != 0, result.output
    return result.output


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "pairs.tsv"
    rows = ["id\ttext_a\ttext_b\tnsp_label"] + [
        f"p{i}\tThe cat sat on the mat {i}.\tIt was warm there.\t{i % 2}" for i in range(6)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture()
def checkpoint(tiny_checkpoint, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, copy)
    return copy


def _empty_weights(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"")


def _truncated_weights(ckpt):
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])


def _config_list(ckpt):
    (ckpt / "config.json").write_text("[]")


def _config_string(ckpt):
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "hidden_size": "64"}))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_empty_weights, "is not a readable safetensors file"),
        (_truncated_weights, "is not a readable safetensors file"),
        (_config_list, "a model config must be a JSON object, got list"),
        (_config_string, "hidden_size must be an integer, got '64'"),
    ],
)
def test_broken_checkpoints(checkpoint, tmp_path, damage, message):
    damage(checkpoint)
    output = run("export", "--model", checkpoint, "--out", tmp_path / "e", "--variant", "fp32")
    assert "Error: " in output and message in output
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--opset", "7"], "'--opset': 7 is not in the range 14<=x<=20"),
        (["--opset", "99"], "'--opset': 99 is not in the range 14<=x<=20"),
    ],
)
def test_export_options(tiny_checkpoint, tmp_path, extra, message):
    assert message in run("export", "--model", tiny_checkpoint, "--out", tmp_path / "e", *extra)


def test_export_calibration_files_are_checked_before_any_work(tiny_checkpoint, tmp_path):
    def pairs_file(name: str, n: int) -> Path:
        path = tmp_path / name
        path.write_text("text_a\ttext_b\n" + "".join(f"short a {i}\tshort b {i}\n" for i in range(n)) + "no tab\n")
        return path

    args = ("export", "--model", tiny_checkpoint, "--out", tmp_path / "e", "--calibration")
    assert "ask for that variant (--variant int8-static)" in run(*args, pairs_file("ok.tsv", 20), "--variant", "int8")
    message = "needs at least 16 valid text pairs, found 5 (1 rows rejected)"
    assert message in run(*args, pairs_file("few.tsv", 5), "--variant", "int8-static")
    assert "does not exist" in run(*args, tmp_path / "none.tsv", "--variant", "int8-static")
    assert not (tmp_path / "e").exists()


def test_export_paths(tiny_checkpoint, tmp_path):
    (tmp_path / "file").write_text("mine")
    assert "is a file" in run("export", "--model", tiny_checkpoint, "--out", tmp_path / "file")
    assert "Error: checkpoint " in run("export", "--model", tmp_path / "no-such-dir", "--out", tmp_path / "e")
    assert "no such file or directory" in run("export", "--model", tmp_path / "no-such-dir", "--out", tmp_path / "e")
    # a directory nobody may create, root included
    assert "Error: " in run("export", "--model", tiny_checkpoint, "--out", "/proc/lucid-eval/e", "--variant", "fp32")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-length", "1"], "'--max-length': 1 is not in the range x>=5"),
        (["--max-length", "2"], "'--max-length': 2 is not in the range x>=5"),
        (["--max-length", "-5"], "'--max-length': -5 is not in the range x>=5"),
        (["--token-budget", "0"], "'--token-budget': 0 is not in the range x>=5"),
        (["--token-budget", "-1"], "'--token-budget': -1 is not in the range x>=5"),
        (["--token-budget", "100"], "100 is less than --max-length 128"),
        (["--seed", "-1"], "'--seed': -1 is not in the range x>=0"),
        (["--threads", "-3"], "'--threads': -3 is not in the range x>=1"),
        (["--runtime", "torch-cpu", "--runtime", "torch-cpu"], "torch-cpu given more than once"),
    ],
)
def test_score_options(tiny_export, corpus, tmp_path, extra, message):
    output = run("score", "--export", tiny_export, "--corpus", corpus, "--out", tmp_path / "run", *extra)
    assert message in output, output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: [], "must hold a JSON object"),
        (lambda m: {**m, "files": list(m["files"])}, "'files' is missing or not a dict"),
        (lambda m: {k: v for k, v in m.items() if k != "model_config"}, "'model_config' is missing"),
    ],
)
def test_score_refuses_a_broken_manifest(tiny_export, corpus, tmp_path, change, message):
    copy = tmp_path / "export"
    shutil.copytree(tiny_export, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(change(manifest)))
    assert message in run("score", "--export", copy, "--corpus", corpus, "--out", tmp_path / "run")


def test_disk_full_while_writing_the_report(tiny_export, corpus, tmp_path, monkeypatch):
    import lucid_eval.reports as reports

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reports, "build_report", full)
    output = run(
        "score", "--export", tiny_export, "--corpus", corpus, "--out", tmp_path / "run", "--runtime", "torch-cpu"
    )
    assert "Error: [Errno 28] No space left on device" in output


def test_demo_is_a_checkpoint_name_in_python_and_in_export(tmp_path):
    from lucid_eval import BERTForPreTraining, BERTTokenizerFast

    assert (
        BERTForPreTraining.from_pretrained("demo").config.vocab_size
        == BERTTokenizerFast.from_pretrained("demo").vocab_size
    )
