"""Exports of a lucid-origin checkpoint (tanh GELU) and an HF one (erf GELU), and lucid's mask forms
at the ONNX boundary (docs/lucid-compat.md, rows 1-3)."""

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from safetensors.torch import save_file

from lucid_eval import BERTForPreTraining
from lucid_eval.export import ExportBundle, ExportConfig, ExportError, export_model
from lucid_eval.export.manifest import Manifest
from lucid_eval.export.sessions import make_session
from lucid_eval.export.transforms import fuse
from lucid_eval.models.masks import padding_mask

GELU_OPS = {"FastGelu", "BiasGelu", "Gelu", "FastGeluBias"}
FORMS = {"lucid": ("tanh", "FastGelu", "gelu_pytorch_tanh"), "hf": ("erf", "BiasGelu", "gelu")}


def write_lucid_checkpoint(path, model: BERTForPreTraining) -> None:
    """The model's weights as lucid 2.13 names them (lower-case layernorm, the decoder bias in the
    decoder, the decoder again as bert.output_embeddings), with a config.json saying "gelu"."""
    path.mkdir()
    state = {k.replace("LayerNorm", "layernorm"): v.clone() for k, v in model.state_dict().items()}
    state["cls.predictions.decoder.bias"] = state.pop("cls.predictions.bias")
    state["bert.output_embeddings.weight"] = state["cls.predictions.decoder.weight"].clone()
    state["bert.output_embeddings.bias"] = state["cls.predictions.decoder.bias"].clone()
    save_file({k: v.contiguous() for k, v in state.items()}, path / "model.safetensors")
    config = {k: v for k, v in model.config.to_dict().items() if k != "checkpoint_origin"}
    (path / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu"}))


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_config, tiny_tokenizer) -> dict:
    """fp32, fused and fp16 exports of the same weights as a lucid checkpoint and as an HF one."""
    torch.manual_seed(0)
    model = BERTForPreTraining(tiny_config)
    root = tmp_path_factory.mktemp("gelu-forms")
    write_lucid_checkpoint(root / "lucid", model)
    model.save_pretrained(root / "hf")
    out = {}
    for origin in FORMS:
        tiny_tokenizer.save_pretrained(root / origin)
        out[origin] = root / f"{origin}-export"
        export_model(
            ExportConfig(model=root / origin, out=out[origin], variants=("fp32", "fused", "fp16"), verify_pairs=16)
        )
    return out


@pytest.mark.parametrize("origin", list(FORMS))
def test_gelu_form_is_recorded_and_fused_to_its_operator(exports, origin, tiny_config):
    form, op, hidden_act = FORMS[origin]
    manifest = json.loads((exports[origin] / "manifest.json").read_text())
    config = manifest["model_config"]
    assert (config["checkpoint_origin"], config["hidden_act"], config["gelu_form"]) == (origin, hidden_act, form)
    verdicts = {name: v["verification"]["verdict"] for name, v in manifest["variants"].items()}
    assert verdicts["fp32"] == verdicts["fused"] == "PASS" and verdicts["fp16"] in ("PASS", "NOT VERIFIED")
    assert manifest["variants"]["fp16"]["conversion"]["gelu"] == {"form": form, "operator": op}
    for graph in ("full", "scoring"):
        fusion = manifest["variants"]["fused"]["fusion"][graph]
        assert fusion["gelu"] == {"form": form, "operator": op}
        assert fusion["operators"][op] == tiny_config.num_hidden_layers + 1  # every layer and the MLM transform
        for variant in ("fused", "fp16"):
            ops = {n.op_type for n in onnx.load(exports[origin] / variant / f"{graph}.onnx").graph.node}
            assert ops & GELU_OPS == {op}, f"{variant}/{graph}: {sorted(ops & GELU_OPS)}"
    checkpoint = json.loads((exports[origin] / "checkpoint" / "config.json").read_text())
    assert checkpoint["hidden_act"] == hidden_act  # what transformers reads: the same GELU
    assert ExportBundle.load(exports[origin]).config.gelu_form == form


def test_fuse_refuses_the_other_gelu_form(exports, tmp_path, tiny_config):
    fp32 = exports["lucid"] / "fp32" / "scoring.onnx"
    with pytest.raises(RuntimeError, match="BiasGelu 0/2"):
        fuse(fp32, tmp_path / "x.onnx", tiny_config.num_attention_heads, tiny_config.hidden_size, 2, "erf")


def test_manifest_gelu_form_must_match_hidden_act(exports):
    data = json.loads((exports["lucid"] / "manifest.json").read_text())
    data["model_config"]["gelu_form"] = "erf"
    with pytest.raises(ExportError, match="gelu_form 'erf' contradicts hidden_act 'gelu_pytorch_tanh'"):
        Manifest.from_json(data, exports["lucid"])


def _inputs(vocab_size: int, B: int = 3, T: int = 20):
    g = torch.Generator().manual_seed(9)
    ids = torch.randint(5, vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 13:], mask[2, 6:] = 0, 0
    types = (torch.arange(T) >= 7).long().expand(B, T).contiguous()
    return ids, mask, types


def _mask_forms(mask: torch.Tensor, heads: int) -> dict[str, torch.Tensor]:
    B, T = mask.shape
    keys = mask[:, None, :].expand(B, T, T)
    return {
        "additive (B, T)": (1.0 - mask.float()) * -1e4,
        "binary (B, T, T)": keys,
        "query&key (B, T, T)": mask[:, None, :] * mask[:, :, None],
        "additive (B, 1, T, T)": (1.0 - keys[:, None].float()) * -1e9,
        "binary (B, H, T, T)": keys[:, None].expand(B, heads, T, T),
        "additive (B, 1, 1, T)": (1.0 - mask[:, None, None, :].float()) * -1e4,
    }


@pytest.mark.parametrize("variant", ["fp32", "fused"])
def test_lucid_mask_forms_run_in_the_graphs_through_padding_mask(exports, tiny_config, variant):
    """The graphs take a binary (B, T) int64 mask; padding_mask converts lucid's other forms into it,
    and the graph then gives PyTorch's logits for the original mask."""
    model = BERTForPreTraining.from_pretrained(exports["lucid"] / "checkpoint")
    session = make_session(exports["lucid"] / variant / "full.onnx").session
    ids, mask, types = _inputs(tiny_config.vocab_size)
    real = mask.bool().numpy()
    for name, form in _mask_forms(mask, tiny_config.num_attention_heads).items():
        with torch.no_grad():
            want = model(ids, form, types)[0].numpy()
        converted = padding_mask(form)
        np.testing.assert_array_equal(converted, mask.numpy(), err_msg=name)
        feed = {"input_ids": ids.numpy(), "attention_mask": converted, "token_type_ids": types.numpy()}
        got = session.run(["prediction_scores"], feed)[0]
        assert np.abs(got - want)[real].max() <= 1e-4, name


def test_masks_the_graphs_cannot_take_are_refused_clearly(exports, tiny_config):
    ids, mask, types = _inputs(tiny_config.vocab_size)
    T = ids.shape[1]
    causal = torch.tril(torch.ones(T, T, dtype=torch.long)).expand(3, T, T)
    with pytest.raises(ValueError, match=r"not a padding mask \(example 0, head 0, query 0"):
        padding_mask(causal)
    session = make_session(exports["lucid"] / "fp32" / "full.onnx").session
    feed = {
        "input_ids": ids.numpy(),
        "attention_mask": (1.0 - mask.float().numpy()) * -1e4,
        "token_type_ids": types.numpy(),
    }
    with pytest.raises(
        onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument, match="expected: \\(tensor\\(int64\\)\\)"
    ):
        session.run(None, feed)
