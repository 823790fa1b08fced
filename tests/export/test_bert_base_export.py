"""A bert-base-sized export works on this 2-core machine and verifies (slow: ~3 min).

Random-init weights: few MLM predictions clear the decisive margin, so int8 may be INCONCLUSIVE
at 64 verification pairs; it must never FAIL, and fp32 and fused must PASS."""

import json

import pytest
import torch
from click.testing import CliRunner

from lucid_eval import BERTConfig, BERTForPreTraining, BERTTokenizerFast
from lucid_eval.cli import main


@pytest.mark.slow
def test_bert_base_export_verifies(tmp_path, bert_vocab):
    torch.manual_seed(0)
    BERTForPreTraining(BERTConfig.base()).save_pretrained(tmp_path / "ckpt")
    BERTTokenizerFast.from_pretrained(bert_vocab).save_pretrained(tmp_path / "ckpt")
    args = ["export", "--model", str(tmp_path / "ckpt"), "--out", str(tmp_path / "export")]
    result = CliRunner().invoke(
        main, [*args, "--variant", "fp32", "--variant", "fused", "--variant", "int8", "--verify-pairs", "64"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    verdicts = {name: v["verification"]["verdict"] for name, v in manifest["variants"].items()}
    assert verdicts["fp32"] == verdicts["fused"] == "PASS" and verdicts["int8"] in ("PASS", "INCONCLUSIVE"), verdicts
    assert manifest["seconds"]["total"] > 0
    fused = manifest["variants"]["fused"]["fusion"]["scoring"]["operators"]
    assert fused["Attention"] == 12 and fused["EmbedLayerNormalization"] == 1
    worst = max(c["max_abs_logit_diff"] for c in manifest["variants"]["fused"]["verification"]["cases"])
    assert worst <= 1e-4
    for variant in ("fp32", "fused"):  # 110 M fp32 parameters, the tied embedding stored once: ~440 MB
        for graph in ("full", "scoring"):
            size = (tmp_path / "export" / variant / f"{graph}.onnx").stat().st_size
            assert size <= 450e6, (variant, graph, size)
