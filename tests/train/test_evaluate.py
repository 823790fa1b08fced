"""Held-out evaluation: `Totals` sums over every batch, the same keys as the training log records."""

import math

import torch

from lucid_eval.train.pretrain import IGNORE_INDEX, evaluate


def test_evaluate_pools_batches_and_gives_nan_over_nothing(tiny_model, tiny_tokenizer) -> None:
    enc = tiny_tokenizer.batch_encode_plus(["A short one.", "Another, a bit longer."], ["Then B.", "And B."],
                                           return_tensors=True)  # fmt: skip
    labels = torch.full_like(enc["input_ids"], IGNORE_INDEX)
    labels[:, 1] = enc["input_ids"][:, 1]
    batch = {**enc, "mlm_labels": labels, "nsp_labels": torch.tensor([0, 1])}
    tiny_model.train()
    one = evaluate(tiny_model, [batch])
    two = evaluate(tiny_model, [batch, batch])
    assert tiny_model.training, "the model's mode is restored"
    assert set(one) == {"mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy", "masked_tokens", "pairs"}
    assert (one["masked_tokens"], one["pairs"]) == (2, 2) and (two["masked_tokens"], two["pairs"]) == (4, 4)
    assert math.isclose(one["mlm_loss"], two["mlm_loss"]) and math.isclose(one["nsp_loss"], two["nsp_loss"])
    unmasked = evaluate(tiny_model, [{**batch, "mlm_labels": torch.full_like(labels, IGNORE_INDEX)}])
    assert math.isnan(unmasked["mlm_loss"]) and math.isnan(unmasked["mlm_accuracy"])
    assert unmasked["masked_tokens"] == 0 and unmasked["nsp_loss"] == one["nsp_loss"]
