"""Turning the PyTorch model into the plain fp32 ONNX graphs (its variants: `transforms`).

Export uses the explicit ("eager") attention so ONNX Runtime's transformer optimizer recognises the
pattern and fuses it; the weights are the same tensors either way.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import replace
from pathlib import Path

import onnx
import torch

from lucid_eval.export.transforms import TWO_GB, tie_decoder_to_embedding
from lucid_eval.models.model import BERTForPreTraining
from lucid_eval.models.scoring import FULL_INPUTS, FULL_OUTPUTS, SCORING_INPUTS, SCORING_OUTPUTS, BERTScorer


def export_model_for_onnx(model: BERTForPreTraining) -> BERTForPreTraining:
    """A copy of the model with the explicit attention pattern (same weights, eval mode)."""
    clone = BERTForPreTraining(replace(model.config, attn_implementation="eager"))
    clone.load_state_dict(copy.deepcopy(model.state_dict()))
    return clone.eval()


def _dummy_inputs(vocab_size: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab_size, (2, 16), generator=g)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 12:] = 0
    types = torch.zeros(2, 16, dtype=torch.long)
    types[:, 8:] = 1
    positions = torch.tensor([[1, 4, 9], [2, 3, 0]])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": types,
        "masked_lm_positions": positions,
        "masked_lm_ids": torch.gather(ids, 1, positions),
        "masked_lm_weights": torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]),
        "next_sentence_labels": torch.tensor([0, 1]),
    }


def _dynamic_axes(names: tuple[str, ...]) -> dict[str, dict[int, str]]:
    axes = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
        "token_type_ids": {0: "batch", 1: "sequence"},
        "masked_lm_positions": {0: "batch", 1: "predictions"},
        "masked_lm_ids": {0: "batch", 1: "predictions"},
        "masked_lm_weights": {0: "batch", 1: "predictions"},
        "next_sentence_labels": {0: "batch"},
        "prediction_scores": {0: "batch", 1: "sequence"},
        "seq_relationship_scores": {0: "batch"},
        "mlm_loss_sum": {0: "batch"},
        "mlm_correct": {0: "batch"},
        "mlm_count": {0: "batch"},
        "nsp_loss": {0: "batch"},
        "nsp_logits": {0: "batch"},
        "mlm_predictions": {0: "batch", 1: "predictions"},
        "mlm_logits": {0: "batch", 1: "predictions"},
    }
    return {n: axes[n] for n in names}


def needs_external_data(model: BERTForPreTraining) -> bool:
    return sum(p.numel() * p.element_size() for p in model.parameters()) > TWO_GB * 0.9


def export_onnx(model: BERTForPreTraining, full_path: Path, scoring_path: Path, opset: int) -> None:
    """Write the full graph (lucid's forward) and the scoring graph from the same weights, the tied
    word embedding stored once."""
    eager = export_model_for_onnx(model)
    dummy = _dummy_inputs(model.config.vocab_size)
    jobs = [
        (eager, FULL_INPUTS, FULL_OUTPUTS, full_path),
        (BERTScorer(eager).eval(), SCORING_INPUTS, SCORING_OUTPUTS, scoring_path),
    ]
    for module, inputs, outputs, path in jobs:
        path.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter about python-side shape checks
            torch.onnx.export(
                module,
                tuple(dummy[n] for n in inputs),
                str(path),
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_axes=_dynamic_axes(inputs + outputs),
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        tie_decoder_to_embedding(path)
        onnx.checker.check_model(str(path), full_check=True)
