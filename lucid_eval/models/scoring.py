"""BERTScorer: what batch evaluation needs from the model, without B x T x V logits.

Masked positions come as a fixed-width padded tensor with a validity weight (Google's and NVIDIA's
`masked_lm_positions` / `masked_lm_weights`); they are gathered *before* the MLM transform and
decoder, so the 30522-wide decoder runs only where a loss is taken. The same module is exported as
the ONNX scoring graph and run by the PyTorch runtimes, so every runtime computes the same thing.
Shapes: B batch, T tokens, C hidden, P masked slots per example, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lucid_eval.models.model import BERTForPreTraining

SCORING_INPUTS = (
    "input_ids",  # (B, T) int64
    "attention_mask",  # (B, T) int64
    "token_type_ids",  # (B, T) int64
    "masked_lm_positions",  # (B, P) int64, padded slots point at 0
    "masked_lm_ids",  # (B, P) int64, the original token ids
    "masked_lm_weights",  # (B, P) float32, 1 for a real slot, 0 for padding
    "next_sentence_labels",  # (B,) int64
)
SCORING_OUTPUTS = (
    "mlm_loss_sum",  # (B,) sum of -log p(label) over the example's masked tokens
    "mlm_correct",  # (B,) masked tokens whose argmax is the label
    "mlm_count",  # (B,) masked tokens
    "nsp_loss",  # (B,) -log p(nsp label)
    "nsp_logits",  # (B, 2)
    "mlm_predictions",  # (B, P) argmax token ids
    "mlm_logits",  # (B, P, V) logits at the masked slots, for numeric comparison
)
FULL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
FULL_OUTPUTS = ("prediction_scores", "seq_relationship_scores")


class BERTScorer(nn.Module):
    """Per-example MLM/NSP losses, counts and predictions from a BERTForPreTraining."""

    def __init__(self, model: BERTForPreTraining) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor,
        masked_lm_positions: Tensor,
        masked_lm_ids: Tensor,
        masked_lm_weights: Tensor,
        next_sentence_labels: Tensor,
    ) -> tuple[Tensor, ...]:
        """The SCORING_OUTPUTS, in that order (ONNX export names outputs by position)."""
        hidden, pooled = self.model.bert(input_ids, attention_mask, token_type_ids)  # (B, T, C), (B, C)
        index = masked_lm_positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])  # (B, P, C)
        gathered = torch.gather(hidden, 1, index)  # (B, P, C)
        logits = self.model.cls.predictions(gathered)  # (B, P, V)
        logits32 = logits.float()
        weights = masked_lm_weights.float()
        token_loss = _nll(logits32, masked_lm_ids)  # (B, P)
        predictions = logits32.argmax(-1)  # (B, P)
        mlm_loss_sum = (token_loss * weights).sum(-1)
        mlm_correct = ((predictions == masked_lm_ids).float() * weights).sum(-1)
        mlm_count = weights.sum(-1)
        nsp_logits = self.model.cls.seq_relationship(pooled).float()  # (B, 2)
        nsp_loss = _nll(nsp_logits, next_sentence_labels)
        outputs = {
            "mlm_loss_sum": mlm_loss_sum,
            "mlm_correct": mlm_correct,
            "mlm_count": mlm_count,
            "nsp_loss": nsp_loss,
            "nsp_logits": nsp_logits,
            "mlm_predictions": predictions,
            "mlm_logits": logits32,
        }
        return tuple(outputs[name] for name in SCORING_OUTPUTS)  # the graph's output order, by name


def _nll(logits: Tensor, labels: Tensor) -> Tensor:
    """-log p(label) over the last axis, as log_softmax then a gather: ONNX Runtime's CPU LogSoftmax
    is vectorized and 8x faster than its ReduceLogSumExp over a 30522-wide vocabulary."""
    return -torch.gather(torch.log_softmax(logits, -1), -1, labels.unsqueeze(-1)).squeeze(-1)
