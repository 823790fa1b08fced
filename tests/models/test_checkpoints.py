"""Strict checkpoint loading: HF, Google (gamma/beta) and lucid namings; clear errors otherwise."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lucid_eval import BERTConfig, BERTForPreTraining
from lucid_eval.models import CheckpointError


def outputs(model):
    ids = torch.arange(5, 21).view(2, 8)
    with torch.no_grad():
        return model(ids)


def resave(src, dst, transform):
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    state = transform(load_file(src / "model.safetensors"))
    save_file({k: v.contiguous() for k, v in state.items()}, dst / "model.safetensors")
    return dst


def test_round_trip_is_exact(tiny_checkpoint):
    model = BERTForPreTraining.from_pretrained(tiny_checkpoint)
    assert not model.training
    again_dir = tiny_checkpoint.parent / "again"
    model.save_pretrained(again_dir)
    torch.testing.assert_close(outputs(model), outputs(BERTForPreTraining.from_pretrained(again_dir)), rtol=0, atol=0)


def test_google_gamma_beta_names_load(tiny_checkpoint, tmp_path):
    def rename(state):
        return {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
                for k, v in state.items()}  # fmt: skip

    path = resave(tiny_checkpoint, tmp_path / "google", rename)
    torch.testing.assert_close(
        outputs(BERTForPreTraining.from_pretrained(path)), outputs(BERTForPreTraining.from_pretrained(tiny_checkpoint))
    )


def test_lucid_names_load(tiny_checkpoint, tmp_path):
    def to_lucid(state):
        out = {k.replace("LayerNorm", "layernorm"): v for k, v in state.items()}
        out["cls.predictions.decoder.bias"] = out.pop("cls.predictions.bias")
        out["cls.predictions.decoder.weight"] = out["bert.embeddings.word_embeddings.weight"].clone()
        return out

    path = resave(tiny_checkpoint, tmp_path / "lucid", to_lucid)
    lucid = BERTForPreTraining.from_pretrained(path)
    assert lucid.config.gelu_form == "tanh"  # lucid's names: lucid's GELU (see test_lucid_compat_model.py)
    hf = BERTForPreTraining.from_pretrained(tiny_checkpoint)
    tanh = BERTForPreTraining(BERTConfig.from_dict({**hf.config.__dict__, "hidden_act": "gelu_pytorch_tanh"}))
    tanh.load_state_dict(hf.state_dict())
    torch.testing.assert_close(outputs(lucid), outputs(tanh.eval()), rtol=0, atol=0)


def test_missing_unexpected_and_shape_errors_name_the_keys(tiny_checkpoint, tmp_path):
    def damage(state):
        state.pop("cls.seq_relationship.bias")
        state["bert.encoder.layer.0.attention.self.extra.weight"] = torch.zeros(2)
        state["bert.pooler.dense.bias"] = torch.zeros(7)
        return state

    path = resave(tiny_checkpoint, tmp_path / "bad", damage)
    with pytest.raises(CheckpointError) as err:
        BERTForPreTraining.from_pretrained(path)
    msg = str(err.value)
    assert "missing keys (1): cls.seq_relationship.bias" in msg
    assert "unexpected keys (1): bert.encoder.layer.0.attention.self.extra.weight" in msg
    assert "bert.pooler.dense.bias: checkpoint (7,) vs model (32,)" in msg


def test_config_mismatch_is_a_shape_error(tiny_checkpoint, tmp_path):
    path = resave(tiny_checkpoint, tmp_path / "cfg", lambda s: s)
    config = json.loads((path / "config.json").read_text())
    config["intermediate_size"] = 48
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"intermediate.dense.weight: checkpoint \(64, 32\) vs model \(48, 32\)"):
        BERTForPreTraining.from_pretrained(path)


def test_pytorch_bin_loads_with_weights_only(tiny_checkpoint, tmp_path):
    path = tmp_path / "bin"
    path.mkdir()
    (path / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    torch.save(load_file(tiny_checkpoint / "model.safetensors"), path / "pytorch_model.bin")
    torch.testing.assert_close(
        outputs(BERTForPreTraining.from_pretrained(path)), outputs(BERTForPreTraining.from_pretrained(tiny_checkpoint))
    )


class Exploit:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_pickled_code_in_bin_is_refused(tiny_checkpoint, tmp_path, capsys):
    path = tmp_path / "evil"
    path.mkdir()
    (path / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    torch.save({"x": Exploit()}, path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        BERTForPreTraining.from_pretrained(path)
    assert "pickle code ran" not in capsys.readouterr().out


def test_missing_files_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        BERTForPreTraining.from_pretrained(tmp_path)
    BERTConfig.tiny().to_json_file(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="neither model.safetensors nor pytorch_model.bin"):
        BERTForPreTraining.from_pretrained(tmp_path)


def test_a_local_directory_named_demo_says_it_shadows_the_shipped_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()  # e.g. an earlier `score --out demo`
    with pytest.raises(CheckpointError, match="the directory demo here is taken before the name 'demo'"):
        BERTForPreTraining.from_pretrained("demo")


def test_config_round_trips_hf_config_json(tmp_path):
    transformers = pytest.importorskip("transformers")
    ours = BERTConfig.tiny(hidden_act="gelu_new", layer_norm_eps=1e-7)
    ours.to_json_file(tmp_path / "config.json")
    hf = transformers.BertConfig.from_pretrained(tmp_path)
    assert (hf.hidden_act, hf.layer_norm_eps, hf.vocab_size) == ("gelu_new", 1e-7, ours.vocab_size)
    hf.save_pretrained(tmp_path / "hf")
    back = BERTConfig.from_json_file(tmp_path / "hf" / "config.json")
    assert back == ours
    with pytest.raises(ValueError, match="position_embedding_type 'relative_key'"):
        BERTConfig.from_dict({**ours.to_dict(), "position_embedding_type": "relative_key"})
