"""Shapes, dtypes and value semantics of every lucid BERTForPreTraining method."""

import pytest
import torch
import torch.nn.functional as F

import lucid_eval.models as models
from lucid_eval import BERTForPreTraining


@pytest.fixture()
def batch(tiny_tokenizer):
    enc = tiny_tokenizer.batch_encode_plus(
        ["The list type is mutable.", "Functions are first-class objects in Python, unlike statements."],
        ["Tuples are not.", "A lambda creates an anonymous function."],
        return_tensors=True,
    )
    return enc


def test_forward_shapes(tiny_model, batch, tiny_config):
    scores, nsp = tiny_model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    B, T = batch["input_ids"].shape
    assert scores.shape == (B, T, tiny_config.vocab_size) and scores.dtype == torch.float32
    assert nsp.shape == (B, 2)


def test_inputs_embeds_equals_input_ids(tiny_model, batch):
    ids = batch["input_ids"]
    embeds = tiny_model.get_input_embeddings()(ids)
    with torch.no_grad():
        a = tiny_model(ids, batch["attention_mask"])
        b = tiny_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"])
    torch.testing.assert_close(a[0], b[0])
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        tiny_model(ids, inputs_embeds=embeds)


def test_decoder_is_tied_to_word_embeddings(tiny_model):
    assert tiny_model.get_output_embeddings().weight is tiny_model.get_input_embeddings().weight


def test_masking_statistics_over_many_draws(tiny_model, tiny_tokenizer):
    ids = torch.randint(5, 1000, (400, 64))
    special = torch.zeros_like(ids)
    special[:, 0] = special[:, 40] = 1
    mask = torch.ones_like(ids)
    mask[:, 50:] = 0
    g = torch.Generator().manual_seed(0)
    masked, labels = tiny_model.create_masked_lm_inputs(ids, mask, special, mask_token_id=4, generator=g)
    selected = labels != -100
    eligible = (mask > 0) & (special == 0)
    assert not selected[~eligible].any(), "special tokens and padding are never masked"
    assert torch.equal(labels[selected], ids[selected])
    rate = selected.sum().item() / eligible.sum().item()
    assert abs(rate - 0.15) < 0.01
    as_mask = (masked == 4) & selected
    unchanged = (masked == ids) & selected
    n = selected.sum().item()
    assert abs(as_mask.sum().item() / n - 0.8) < 0.02
    assert abs(unchanged.sum().item() / n - 0.1) < 0.02  # kept, plus the rare random draw of the same id
    assert torch.equal(masked[~selected], ids[~selected])


def test_masking_is_reproducible_with_a_generator(tiny_model):
    ids = torch.randint(5, 1000, (4, 32))
    a = tiny_model.create_masked_lm_inputs(ids, generator=torch.Generator().manual_seed(7))
    b = tiny_model.create_masked_lm_inputs(ids, generator=torch.Generator().manual_seed(7))
    c = tiny_model.create_masked_lm_inputs(ids, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


@pytest.mark.parametrize("bad", [dict(mlm_probability=1.5), dict(mask_replace_prob=0.95, random_replace_prob=0.1)])
def test_masking_rejects_bad_probabilities(tiny_model, bad):
    with pytest.raises(ValueError):
        tiny_model.create_masked_lm_inputs(torch.ones(1, 4, dtype=torch.long), **bad)


def test_mlm_loss_reductions_and_ignore_index(tiny_model, batch):
    ids, mask = batch["input_ids"], batch["attention_mask"]
    labels = torch.full_like(ids, -1)
    labels[0, 1:4] = ids[0, 1:4]
    labels[1, 2] = ids[1, 2]
    with torch.no_grad():
        mean = tiny_model.get_mlm_loss(labels, ids, mask, ignore_index=-1)
        total = tiny_model.get_mlm_loss(labels, ids, mask, ignore_index=-1, reduction="sum")
        per_token = tiny_model.get_mlm_loss(labels, ids, mask, ignore_index=-1, reduction=None)
        none_labelled = tiny_model.get_mlm_loss(torch.full_like(ids, -100), ids, mask)
        scores, _ = tiny_model(ids, mask)
    logp = scores.log_softmax(-1)
    token_losses = [-logp[0, t, ids[0, t]] for t in (1, 2, 3)] + [-logp[1, 2, ids[1, 2]]]
    torch.testing.assert_close(total, torch.stack(token_losses).sum())
    torch.testing.assert_close(mean, total / 4)
    T = ids.shape[1]
    assert per_token.shape == (2 * T,)  # lucid: every token's loss, 0 where ignored
    torch.testing.assert_close(per_token[[1, 2, 3, T + 2]], torch.stack(token_losses))
    assert per_token.count_nonzero() == 4
    assert none_labelled.item() == 0.0


def test_nsp_loss_and_combined_weighted_loss(tiny_model, batch):
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    nsp = torch.tensor([0, 1])
    labels = torch.full_like(ids, -100)
    labels[:, 1] = ids[:, 1]
    with torch.no_grad():
        mlm = tiny_model.get_mlm_loss(labels, ids, mask, types)
        nsp_loss = tiny_model.get_nsp_loss(nsp, ids, mask, types)
        total = tiny_model.get_loss(labels, nsp, ids, mask, types, mlm_weight=0.3, nsp_weight=2.0)
        per = tiny_model.get_loss(labels, nsp, ids, mask, types, reduction=None)
        nsp_per = tiny_model.get_nsp_loss(nsp, ids, mask, types, reduction=None)
    torch.testing.assert_close(total, 0.3 * mlm + 2.0 * nsp_loss)
    assert per.shape == (2,) and nsp_per.shape == (2,)
    torch.testing.assert_close(per.mean(), mlm + nsp_loss)  # one masked token each: means agree


def test_loss_gradients_match_scoring_every_position(tiny_model, batch):
    """get_loss runs the vocabulary head on labelled positions only; training must see the same gradients."""
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    labels = torch.full_like(ids, -100)
    labels[0, 1:3], labels[1, 2] = ids[0, 1:3], ids[1, 2]
    nsp = torch.tensor([0, 1])
    tiny_model.get_loss(labels, nsp, ids, mask, types).backward()
    fast = {n: p.grad.clone() for n, p in tiny_model.named_parameters()}
    tiny_model.zero_grad()
    scores, nsp_scores = tiny_model(ids, mask, types)
    full = F.cross_entropy(scores.flatten(0, 1), labels.flatten()) + F.cross_entropy(nsp_scores, nsp)
    full.backward()
    for name, param in tiny_model.named_parameters():
        torch.testing.assert_close(fast[name], param.grad, msg=name)


def test_predictions_and_accuracies(tiny_model, batch):
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    with torch.no_grad():
        pred_ids = tiny_model.predict_mlm_token_ids(ids, mask, types)
        pred_nsp = tiny_model.predict_nsp_labels(ids, mask, types)
    assert pred_ids.shape == ids.shape and pred_ids.dtype == torch.int64
    assert pred_nsp.shape == (2,)
    labels = torch.full_like(ids, -100)
    labels[0, 1], labels[0, 2], labels[1, 1] = pred_ids[0, 1], pred_ids[0, 2] + 1, pred_ids[1, 1]
    nsp = torch.stack([pred_nsp[0], 1 - pred_nsp[1]])
    with torch.no_grad():
        mlm_acc = tiny_model.get_mlm_accuracy(labels, ids, mask, types)
        nsp_acc = tiny_model.get_nsp_accuracy(nsp, ids, mask, types)
        accs = tiny_model.get_accuracy(labels, nsp, ids, mask, types, mlm_weight=3.0, nsp_weight=1.0)
    assert mlm_acc.item() == pytest.approx(2 / 3)
    assert nsp_acc.item() == pytest.approx(0.5)
    assert accs[0].item() == pytest.approx(2 / 3) and accs[1].item() == pytest.approx(0.5)
    assert accs[2].item() == pytest.approx((3 * 2 / 3 + 0.5) / 4)
    assert tiny_model.get_mlm_accuracy(torch.full_like(ids, -100), ids).item() == 0.0


def test_loss_from_text(tiny_model, tiny_tokenizer):
    g = torch.Generator().manual_seed(3)
    loss = tiny_model.get_loss_from_text(
        tiny_tokenizer,
        "Dictionaries map keys to values.",
        "Sets hold unique items.",
        nsp_label=1,
        mlm_probability=0.5,
        generator=g,
    )
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    again = tiny_model.get_loss_from_text(
        tiny_tokenizer,
        "Dictionaries map keys to values.",
        "Sets hold unique items.",
        nsp_label=1,
        mlm_probability=0.5,
        generator=torch.Generator().manual_seed(3),
    )
    assert loss.item() == again.item()
    single = tiny_model.get_loss_from_text(tiny_tokenizer, "Only one segment here.", reduction=None)
    assert single.shape == (1,)


def test_gpu_request_without_cuda_is_a_clear_error(tiny_model, tiny_tokenizer):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match="asks for a CUDA GPU, but torch.cuda.is_available"):
        tiny_model.get_loss_from_text(tiny_tokenizer, "a", "b", device="gpu")
    with pytest.raises(ValueError, match="device must be 'cpu' or 'gpu'"):
        tiny_model.get_loss_from_text(tiny_tokenizer, "a", "b", device="tpu")


def test_factories_and_module_import():
    assert models.BERTForPreTraining is BERTForPreTraining
    tiny = models.bert_for_pre_training_tiny()
    assert tiny.config.num_hidden_layers == 2
    assert models.BERTConfig.large().hidden_size == 1024
    with pytest.raises(ValueError, match="hidden_act"):
        models.BERTConfig.tiny(hidden_act="relu")


def test_gelu_tanh_is_lucid_activation(tiny_config):
    torch.manual_seed(0)
    exact = BERTForPreTraining(tiny_config).eval()
    approx = BERTForPreTraining(models.BERTConfig.from_dict({**tiny_config.__dict__, "hidden_act": "gelu_tanh"})).eval()
    approx.load_state_dict(exact.state_dict())
    ids = torch.randint(5, 100, (1, 8))
    with torch.no_grad():
        diff = (exact(ids)[0] - approx(ids)[0]).abs().max().item()
    assert 0 < diff < 1e-2
