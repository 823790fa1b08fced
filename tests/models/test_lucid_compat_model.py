"""BERTForPreTraining against lucid 2.13's documented behaviour (docs/lucid-compat.md, rows 1-4 and 8).

Each test names its row. lucid cannot be installed here, so the expected values are lucid's as
measured side by side (issue 19) or as its API documents them.
"""

import inspect
import json

import pytest
import torch
from safetensors.torch import save_file

from lucid_eval import BERTConfig, BERTForPreTraining
from lucid_eval.models import CheckpointError
from lucid_eval.models.bert import _activation

X = torch.tensor([-1.0, 0.5, 2.0])
LUCID_GELU = torch.tensor([-0.158808, 0.345714, 1.954598])  # lucid 2.13: F.gelu([-1, .5, 2])
ERF_GELU = torch.tensor([-0.158655, 0.345731, 1.954500])  # HF "gelu"


def _batch(vocab_size: int, B: int = 3, T: int = 12):
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(5, vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 8:] = 0
    mask[2, 5:] = 0
    types = (torch.arange(T) >= T // 2).long().expand(B, T)
    return ids, mask, types


def to_lucid_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An HF-named state dict renamed as lucid 2.13 saves it: lower-case layernorm, the decoder bias
    inside the decoder, the decoder a second time as bert.output_embeddings, the position buffers."""
    out = {k.replace("LayerNorm", "layernorm"): v.clone() for k, v in state.items()}
    out["cls.predictions.decoder.bias"] = out.pop("cls.predictions.bias")
    out["cls.predictions.decoder.weight"] = out["bert.embeddings.word_embeddings.weight"].clone()
    out["bert.output_embeddings.weight"] = out["cls.predictions.decoder.weight"].clone()
    out["bert.output_embeddings.bias"] = out["cls.predictions.decoder.bias"].clone()
    out["bert.embeddings.position_ids"] = torch.arange(512)[None]
    return out


def write_lucid_checkpoint(path, model: BERTForPreTraining, **config_changes) -> None:
    """A lucid checkpoint as a user brings it: lucid's weights, a config.json saying "gelu"."""
    path.mkdir()
    state = to_lucid_names(model.state_dict())
    save_file({k: v.contiguous() for k, v in state.items()}, path / "model.safetensors")
    config = {k: v for k, v in model.config.to_dict().items() if k != "checkpoint_origin"}
    (path / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu", **config_changes}))


@pytest.fixture()
def lucid_model(tiny_config) -> BERTForPreTraining:
    """What lucid computes: the tanh GELU."""
    torch.manual_seed(0)
    return BERTForPreTraining(BERTConfig.from_dict({**tiny_config.__dict__, "hidden_act": "gelu_pytorch_tanh"})).eval()


# ---- row 1: GELU ------------------------------------------------------------------------------------
def test_row1_gelu_follows_the_checkpoint_origin():
    lucid = BERTConfig.tiny(checkpoint_origin="lucid")
    torch.testing.assert_close(_activation(lucid)(X), LUCID_GELU, atol=1e-6, rtol=0)
    torch.testing.assert_close(_activation(BERTConfig.tiny())(X), ERF_GELU, atol=1e-6, rtol=0)
    assert (lucid.hidden_act, lucid.gelu_form) == ("gelu_pytorch_tanh", "tanh")
    assert (BERTConfig.tiny().hidden_act, BERTConfig.tiny().gelu_form) == ("gelu", "erf")
    assert BERTConfig.tiny(hidden_act="gelu_tanh").hidden_act == "gelu_pytorch_tanh"
    with pytest.raises(ValueError, match="checkpoint_origin"):
        BERTConfig.tiny(checkpoint_origin="torch")


def test_row1_lucid_config_stays_readable_by_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    BERTConfig.tiny(checkpoint_origin="lucid").to_json_file(tmp_path / "config.json")
    hf = transformers.BertConfig.from_pretrained(tmp_path)
    act = transformers.activations.get_activation(hf.hidden_act)
    torch.testing.assert_close(act(X), LUCID_GELU, atol=1e-6, rtol=0)
    assert BERTConfig.from_json_file(tmp_path / "config.json") == BERTConfig.tiny(checkpoint_origin="lucid")


# ---- row 2: lucid checkpoints -------------------------------------------------------------------------
def test_row2_lucid_state_dict_with_output_embeddings_loads(tmp_path, lucid_model, tiny_config):
    write_lucid_checkpoint(tmp_path / "lucid", lucid_model)
    loaded = BERTForPreTraining.from_pretrained(tmp_path / "lucid")
    assert (loaded.config.checkpoint_origin, loaded.config.gelu_form) == ("lucid", "tanh")
    ids, mask, types = _batch(tiny_config.vocab_size)
    with torch.no_grad():
        want, got = lucid_model(ids, mask, types), loaded(ids, mask, types)
        erf = BERTForPreTraining(tiny_config).eval()
        erf.load_state_dict(lucid_model.state_dict())
        exact = erf(ids, mask, types)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert (exact[0] - want[0]).abs().max() > 1e-6, "the erf form would give other logits"


def test_row2_lucid_checkpoint_resaves_in_hf_format(tmp_path, lucid_model, tiny_config):
    transformers = pytest.importorskip("transformers")
    write_lucid_checkpoint(tmp_path / "lucid", lucid_model)
    BERTForPreTraining.from_pretrained(tmp_path / "lucid").save_pretrained(tmp_path / "hf")
    again = BERTForPreTraining.from_pretrained(tmp_path / "hf")
    assert (again.config.checkpoint_origin, again.config.gelu_form) == ("lucid", "tanh")
    hf = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf").eval()
    ids, mask, types = _batch(tiny_config.vocab_size)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).prediction_logits
        ours = again(ids, mask, types)[0]
    assert (ours - ref)[mask.bool()].abs().max() <= 1e-5


def test_row2_hf_checkpoint_keeps_the_erf_form(tiny_checkpoint):
    model = BERTForPreTraining.from_pretrained(tiny_checkpoint)
    assert (model.config.checkpoint_origin, model.config.gelu_form) == ("hf", "erf")


def test_row2_output_embeddings_must_agree_with_the_decoder(tmp_path, lucid_model):
    write_lucid_checkpoint(tmp_path / "lucid", lucid_model)
    path = tmp_path / "lucid" / "model.safetensors"
    from safetensors.torch import load_file

    state = load_file(path)
    state["bert.output_embeddings.weight"] = state["bert.output_embeddings.weight"] + 1
    save_file(state, path)
    with pytest.raises(CheckpointError, match="map to cls.predictions.decoder.weight with different values"):
        BERTForPreTraining.from_pretrained(tmp_path / "lucid")


# ---- row 3: attention masks ---------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_row3_additive_and_3d_4d_masks_equal_the_binary_mask(tiny_config, impl):
    torch.manual_seed(0)
    model = BERTForPreTraining(BERTConfig.from_dict({**tiny_config.__dict__, "attn_implementation": impl})).eval()
    ids, mask, types = _batch(tiny_config.vocab_size)
    B, T = ids.shape
    additive = (1.0 - mask.float()) * -10000.0  # (B, T): 0 attend, -1e4 ignore
    keys = mask[:, None, :].expand(B, T, T)  # (B, T, T): every query row the padding mask
    query_and_key = mask[:, None, :] * mask[:, :, None]  # (B, T, T): HF's style, padded rows empty
    forms = {
        "additive (B, T)": additive,
        "additive -inf (B, T)": torch.where(mask.bool(), 0.0, float("-inf")),
        "binary bool (B, T)": mask.bool(),
        "binary (B, T, T)": keys,
        "binary query&key (B, T, T)": query_and_key,
        "additive (B, 1, T, T)": (1.0 - keys[:, None].float()) * -1e9,
        "binary (B, H, T, T)": keys[:, None].expand(B, tiny_config.num_attention_heads, T, T),
        "additive (B, 1, 1, T)": additive[:, None, None, :],
    }
    real = mask.bool()
    with torch.no_grad():
        want = model(ids, mask, types)
        for name, form in forms.items():
            got = model(ids, form, types)
            assert (got[0] - want[0])[real].abs().max() <= 1e-5, name
            assert (got[1] - want[1]).abs().max() <= 1e-5, name


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.zeros(3, 12), "all zeros"),
        (torch.tensor([0.0, -1.0, 1.0] * 4).expand(3, 12), "mixes positive and negative"),
        (torch.full((3, 12), 2), "0 and 1 only"),
        (torch.ones(3, 11), r"does not fit input of shape \(3, 12\)"),
        (torch.ones(3, 2, 2, 2, 12), "does not fit"),
    ],
)
def test_row3_ambiguous_or_misshaped_masks_are_refused(tiny_model, tiny_config, mask, message):
    ids, _, _ = _batch(tiny_config.vocab_size)
    with pytest.raises(ValueError, match=message):
        tiny_model(ids, mask)


def test_row3_masking_reads_additive_masks(tiny_model, tiny_config):
    ids, mask, _ = _batch(tiny_config.vocab_size)
    binary = tiny_model.create_masked_lm_inputs(ids, mask, generator=torch.Generator().manual_seed(1))
    additive = tiny_model.create_masked_lm_inputs(
        ids, (1.0 - mask.float()) * -1e4, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(binary[1], additive[1]) and (binary[1] != -100).any()


# ---- row 4: reductions --------------------------------------------------------------------------------
def test_row4_reductions(tiny_model, tiny_config):
    ids, mask, types = _batch(tiny_config.vocab_size)
    labels = torch.full_like(ids, -100)
    labels[0, 1:4], labels[2, 2] = ids[0, 1:4], ids[2, 2]  # example 1 has no label
    nsp = torch.tensor([0, 1, 0])
    with torch.no_grad():
        token = tiny_model.get_mlm_loss(labels, ids, mask, types, reduction=None)
        nsp_each = tiny_model.get_nsp_loss(nsp, ids, mask, types, reduction=None)
        each = tiny_model.get_loss(labels, nsp, ids, mask, types, reduction=None, mlm_weight=0.5)
        spelled = {
            "mlm": tiny_model.get_mlm_loss(labels, ids, mask, types, reduction="none"),
            "nsp": tiny_model.get_nsp_loss(nsp, ids, mask, types, reduction="none"),
            "total": tiny_model.get_loss(labels, nsp, ids, mask, types, reduction="none", mlm_weight=0.5),
        }
    for name, want in (("mlm", token), ("nsp", nsp_each), ("total", each)):
        torch.testing.assert_close(spelled[name], want, msg=f"'none' and None differ for {name}")
    B, T = ids.shape
    assert token.shape == (B * T,) and nsp_each.shape == (B,)
    per_token = token.view(B, T)
    mlm_each = torch.stack([per_token[0, 1:4].mean(), torch.tensor(0.0), per_token[2, 2]])
    assert each.shape == (B,)  # lucid fails here for B > 1: (B*T,) + (B,)
    torch.testing.assert_close(each, 0.5 * mlm_each + nsp_each)
    with pytest.raises(ValueError, match="reduction must be"):
        tiny_model.get_loss(labels, nsp, ids, mask, types, reduction="avg")


# ---- row 8: accuracy ------------------------------------------------------------------------------------
def test_row8_get_accuracy_keywords_in_lucid_order_and_weights_checked(tiny_model, tiny_config):
    params = inspect.signature(BERTForPreTraining.get_accuracy).parameters
    keyword_only = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert keyword_only == ["ignore_index", "mlm_weight", "nsp_weight"]
    ids, mask, types = _batch(tiny_config.vocab_size)
    labels = torch.full_like(ids, -100)
    labels[:, 1] = ids[:, 1]
    with pytest.raises(ValueError, match="mlm_weight \\+ nsp_weight must be positive"):
        tiny_model.get_accuracy(labels, torch.tensor([0, 1, 0]), ids, mask, types, mlm_weight=1.0, nsp_weight=-1.0)


def test_masking_defaults_to_lucids_103_and_checks_it(tiny_model):
    params = inspect.signature(BERTForPreTraining.create_masked_lm_inputs).parameters
    assert params["mask_token_id"].default == 103
    with pytest.raises(ValueError, match="mask_token_id 5000 is outside the vocabulary"):
        tiny_model.create_masked_lm_inputs(torch.ones(1, 4, dtype=torch.long), mask_token_id=5000)


def test_loss_from_text_masks_with_the_tokenizers_mask_id(tiny_model, tiny_tokenizer):
    """lucid takes [MASK]'s id from the tokenizer (4 here, not 103); so does lucid-eval."""
    text = ("Lists are mutable sequences.", "Tuples are immutable ones.")
    got = tiny_model.get_loss_from_text(tiny_tokenizer, *text, generator=torch.Generator().manual_seed(2))
    enc = tiny_tokenizer.encode_pretraining_inputs(*text, return_tensor=True)
    masked, labels = tiny_model.create_masked_lm_inputs(
        enc["input_ids"],
        enc["attention_mask"],
        enc["special_tokens_mask"],
        mask_token_id=tiny_tokenizer.mask_token_id,
        generator=torch.Generator().manual_seed(2),
    )
    assert (masked == tiny_tokenizer.mask_token_id).any()
    want = tiny_model.get_loss(labels, torch.tensor([0]), masked, enc["attention_mask"], enc["token_type_ids"])
    torch.testing.assert_close(got, want)
