"""Our BERTForPreTraining is the same model as transformers.BertForPreTraining, both ways through files."""

import pytest
import torch

from lucid_eval import BERTConfig, BERTForPreTraining

transformers = pytest.importorskip("transformers")


def hf_config(config: BERTConfig):
    return transformers.BertConfig(**{k: v for k, v in config.to_dict().items() if k != "architectures"})


def batch_with_padding(vocab_size: int, B: int = 3, T: int = 16):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 11:] = 0
    mask[2, 6:] = 0
    ids[mask == 0] = 0
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, T // 2 :] = 1
    labels = torch.full((B, T), -100)
    labels[:, 2:5] = ids[:, 2:5]
    return ids, mask, types, labels, torch.tensor([0, 1, 0])


@pytest.mark.parametrize("name", ["tiny", pytest.param("base", marks=pytest.mark.slow)])
@pytest.mark.parametrize("direction", ["ours->hf", "hf->ours"])
def test_same_outputs_and_losses_as_transformers(tmp_path, name, direction):
    config = BERTConfig.tiny() if name == "tiny" else BERTConfig.base()
    torch.manual_seed(0)
    if direction == "ours->hf":
        ours = BERTForPreTraining(config)
        ours.save_pretrained(tmp_path)
        hf = transformers.BertForPreTraining.from_pretrained(tmp_path)
    else:
        hf = transformers.BertForPreTraining(hf_config(config))
        hf.save_pretrained(tmp_path)
        ours = BERTForPreTraining.from_pretrained(tmp_path)
    ours.eval(), hf.eval()
    ids, mask, types, labels, nsp = batch_with_padding(config.vocab_size)
    with torch.no_grad():
        scores, nsp_scores = ours(ids, mask, types)
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels, next_sentence_label=nsp)
        mlm_loss = ours.get_mlm_loss(labels, ids, mask, types)
        nsp_loss = ours.get_nsp_loss(nsp, ids, mask, types)
        total = ours.get_loss(labels, nsp, ids, mask, types)
    real = mask.bool()
    assert (scores - ref.prediction_logits)[real].abs().max() <= 1e-5
    assert (nsp_scores - ref.seq_relationship_logits).abs().max() <= 1e-5
    ref_mlm = torch.nn.functional.cross_entropy(
        ref.prediction_logits.reshape(-1, config.vocab_size), labels.reshape(-1)
    )
    ref_nsp = torch.nn.functional.cross_entropy(ref.seq_relationship_logits, nsp)
    assert abs(mlm_loss.item() - ref_mlm.item()) <= 1e-5
    assert abs(nsp_loss.item() - ref_nsp.item()) <= 1e-5
    assert abs(total.item() - ref.loss.item()) <= 1e-5


def test_eager_and_sdpa_attention_agree(tiny_config):
    torch.manual_seed(0)
    sdpa = BERTForPreTraining(tiny_config).eval()
    eager = BERTForPreTraining(BERTConfig.from_dict({**tiny_config.__dict__, "attn_implementation": "eager"})).eval()
    eager.load_state_dict(sdpa.state_dict())
    ids, mask, types, _, _ = batch_with_padding(tiny_config.vocab_size)
    with torch.no_grad():
        a, b = sdpa(ids, mask, types), eager(ids, mask, types)
    assert (a[0] - b[0])[mask.bool()].abs().max() <= 1e-5
    assert (a[1] - b[1]).abs().max() <= 1e-5
