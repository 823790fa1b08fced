"""`lucid-eval export` and `lucid-eval runtimes` through click's CliRunner."""

import json

from click.testing import CliRunner

from lucid_eval.cli import main


def test_version_and_help():
    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).output.startswith("lucid-eval, version")
    assert "export" in runner.invoke(main, ["--help"]).output


def test_export_command_writes_a_verified_export(tiny_checkpoint, tmp_path):
    args = ["--model", str(tiny_checkpoint), "--out", str(tmp_path), "--variant", "fused", "--verify-pairs", "200"]
    result = CliRunner().invoke(main, ["export", *args])
    assert result.exit_code == 0, result.output
    assert "fused  fp32  cpu   PASS" in result.output
    assert json.loads((tmp_path / "manifest.json").read_text())["verdict"] == "PASS"


def test_export_of_a_missing_checkpoint_fails_clearly(tmp_path):
    result = CliRunner().invoke(main, ["export", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "nope: no such file or directory" in result.output


def test_export_that_fails_verification_exits_3_and_leaves_out_alone(tiny_checkpoint, tmp_path, perturbed_export):
    args = [
        "export",
        "--model",
        str(tiny_checkpoint),
        "--out",
        str(tmp_path / "e"),
        "--variant",
        "fp32",
        "--verify-pairs",
        "16",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3 and "fp32: full graph: max |Δ MLM logit|" in result.output
    assert not (tmp_path / "e").exists() and list(tmp_path.glob("e.failed-*"))


def test_runtimes_command_lists_reasons(tiny_export):
    result = CliRunner().invoke(main, ["runtimes", "--export", str(tiny_export)])
    assert result.exit_code == 0
    assert "torch-cpu       yes" in result.output and "ort-cuda-fp16" in result.output
