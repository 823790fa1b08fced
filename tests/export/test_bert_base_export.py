"""The bert-base-sized export works on this 2-core machine and passes verification (slow: ~2.5 min)."""

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
    result = CliRunner().invoke(main, ["export", "--model", str(tmp_path / "ckpt"), "--out", str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["verification_passed"] and manifest["seconds"]["total"] > 0
    fused = manifest["variants"]["fused"]["fusion"]["scoring"]["operators"]
    assert fused["Attention"] == 12 and fused["EmbedLayerNormalization"] == 1
    worst = max(c["max_abs_logit_diff"] for c in manifest["variants"]["fused"]["verification"]["cases"])
    assert worst <= 1e-4
