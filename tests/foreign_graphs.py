"""Third-party BERT graphs built the way users build them, for the bring-your-own-ONNX tests:
a plain `torch.onnx.export` of `transformers.BertForPreTraining` (optionally with int32 inputs or
without token_type_ids), and onnxruntime's transformer optimizer output of such a graph."""

from __future__ import annotations

from pathlib import Path

import torch

AXES = {0: "batch", 1: "sequence"}


class _PreTraining(torch.nn.Module):
    """transformers.BertForPreTraining with plain tensor outputs; int32 ids are widened inside."""

    def __init__(self, model: torch.nn.Module, token_types: bool) -> None:
        super().__init__()
        self.model, self.token_types = model, token_types

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        types = token_type_ids.long() if self.token_types else None
        out = self.model(input_ids=input_ids.long(), attention_mask=attention_mask.long(), token_type_ids=types)
        return out.prediction_logits, out.seq_relationship_logits


def hf_pretraining_graph(
    checkpoint: Path,
    path: Path,
    *,
    dtype: torch.dtype = torch.int64,
    token_types: bool = True,
    output_names: tuple[str, str] = ("prediction_logits", "seq_relationship_logits"),
) -> Path:
    """torch.onnx.export of transformers.BertForPreTraining loaded from `checkpoint`."""
    from transformers import BertForPreTraining

    model = _PreTraining(BertForPreTraining.from_pretrained(str(checkpoint)).eval(), token_types)
    inputs = ["input_ids", "attention_mask", *(["token_type_ids"] if token_types else [])]
    dummy = tuple(torch.ones(2, 7, dtype=dtype) for _ in inputs)
    torch.onnx.export(
        model,
        dummy,
        str(path),
        input_names=inputs,
        output_names=list(output_names),
        dynamic_axes={**{n: AXES for n in inputs}, output_names[0]: AXES, output_names[1]: {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def ort_optimized(graph: Path, path: Path, num_heads: int, hidden_size: int) -> Path:
    """onnxruntime.transformers' BERT optimizer output of `graph` (fused attention and layer norms)."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimize_model(str(graph), model_type="bert", num_heads=num_heads, hidden_size=hidden_size).save_model_to_file(
        str(path)
    )
    return path


class _MaskedLM(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


def hf_masked_lm_graph(checkpoint: Path, path: Path) -> Path:
    """torch.onnx.export of transformers.BertForMaskedLM (no NSP head; output `logits`, as Optimum's
    fill-mask export names it) loaded from a BertForPreTraining `checkpoint`."""
    from transformers import BertForMaskedLM

    model = _MaskedLM(BertForMaskedLM.from_pretrained(str(checkpoint)).eval())
    inputs = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(
        model,
        tuple(torch.ones(2, 7, dtype=torch.int64) for _ in inputs),
        str(path),
        input_names=inputs,
        output_names=["logits"],
        dynamic_axes={**{n: AXES for n in inputs}, "logits": AXES},
        opset_version=17,
        dynamo=False,
    )
    return path
