"""BERTForPreTraining: BERT with masked-LM and next-sentence heads, exposing lucid's task API.

The encoder lives in `bert.py`; this file holds the task methods (losses, masking, predictions,
accuracies) with lucid's signatures. Shapes: B batch, T tokens, V vocabulary.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lucid_eval.models.bert import BertModel, BertPreTrainingHeads
from lucid_eval.models.checkpoints import (
    checkpoint_path,
    is_lucid_state,
    read_config,
    read_state_dict,
    remap_state_dict,
    untied_state,
    write_checkpoint,
)
from lucid_eval.models.config import BERTConfig
from lucid_eval.models.device import resolve_device
from lucid_eval.models.losses import (
    Reduction,
    check_reduction,
    example_losses,
    masked_accuracy,
    reduce_token_losses,
    weighted_accuracy,
)
from lucid_eval.models.masking import MaskingRule
from lucid_eval.models.masks import attended_tokens

if TYPE_CHECKING:
    from lucid_eval.models.tokenizer import BERTTokenizerFast


class BERTForPreTraining(nn.Module):
    """BERT with the masked-LM and next-sentence-prediction heads (lucid's API, HF's weights)."""

    def __init__(self, config: BERTConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.apply(self._init_weights)
        self.tie_weights()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def tie_weights(self) -> None:
        """Share the MLM decoder weight with the word embeddings (the bias stays the head's own)."""
        if self.config.tie_word_embedding:
            self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    @property
    def device(self) -> torch.device:
        return self.bert.embeddings.word_embeddings.weight.device

    # ---- forward and losses -------------------------------------------------------------
    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Returns (prediction_scores (B, T, V), seq_relationship_scores (B, 2))."""
        sequence_output, pooled_output = self.bert(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds
        )
        return self.cls(sequence_output, pooled_output)

    def get_mlm_loss(
        self,
        mlm_labels: Tensor,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        *,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
    ) -> Tensor:
        """Cross-entropy over labelled tokens: 'mean', 'sum', or None/'none' for every token's loss
        flattened to (B*T,), 0 where ignored (as lucid)."""
        check_reduction(reduction)
        sequence_output, _ = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        return reduce_token_losses(*self._token_losses(sequence_output, mlm_labels, ignore_index), reduction)

    def _token_losses(self, sequence_output: Tensor, mlm_labels: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
        """(B, T) token losses (0 where unlabelled) and the (B, T) labelled positions, with the
        vocabulary head run on labelled positions only: the same values as scoring every position,
        without the (B, T, V) logits that dominate the cost of training a small model (about 15 %
        of positions carry a label)."""
        labels = mlm_labels.reshape(sequence_output.shape[:2])  # (B, T)
        valid = labels != ignore_index
        logits = self.cls.predictions(sequence_output[valid])  # (N, V)
        losses = F.cross_entropy(logits.float(), labels[valid], reduction="none")  # (N,)
        per_token = torch.zeros(labels.shape, dtype=losses.dtype, device=losses.device).masked_scatter(valid, losses)
        return per_token, valid

    def get_nsp_loss(
        self,
        nsp_labels: Tensor,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        *,
        reduction: Reduction = "mean",
    ) -> Tensor:
        """Cross-entropy of the NSP head: 'mean', 'sum', or None/'none' for (B,)."""
        check_reduction(reduction)
        _, pooled_output = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        return self._nsp_loss(pooled_output, nsp_labels, reduction)

    def _nsp_loss(self, pooled_output: Tensor, nsp_labels: Tensor, reduction: Reduction) -> Tensor:
        """NSP loss from the pooled output: the vocabulary head is not needed for it."""
        nsp_scores = self.cls.seq_relationship(pooled_output)  # (B, 2)
        return F.cross_entropy(nsp_scores.float(), nsp_labels.reshape(-1), reduction=reduction or "none")

    def get_loss(
        self,
        mlm_labels: Tensor,
        nsp_labels: Tensor,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        *,
        mlm_weight: float = 1.0,
        nsp_weight: float = 1.0,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
    ) -> Tensor:
        """mlm_weight * MLM loss + nsp_weight * NSP loss. reduction=None/'none' gives one loss per
        example (B,), its MLM part the mean over the example's labelled tokens; lucid adds (B*T,)
        token losses to (B,) NSP losses there, which fails for B > 1."""
        check_reduction(reduction)
        sequence_output, pooled_output = self.bert(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds
        )
        per_token, valid = self._token_losses(sequence_output, mlm_labels, ignore_index)
        if reduction in ("none", None):
            mlm = example_losses(per_token, valid)  # (B,)
        else:
            mlm = reduce_token_losses(per_token, valid, reduction)
        nsp = self._nsp_loss(pooled_output, nsp_labels, reduction)
        return mlm_weight * mlm + nsp_weight * nsp

    def get_loss_from_text(
        self,
        tokenizer: BERTTokenizerFast,
        text_a: str,
        text_b: str | None = None,
        *,
        nsp_label: int = 0,
        device: str = "cpu",
        mask_token_id: int | None = None,
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        mlm_weight: float = 1.0,
        nsp_weight: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Tokenize one text (pair), mask it, and return the pretraining loss.

        mask_token_id defaults to the tokenizer's [MASK] id; pass a `generator` for reproducible masks.
        """
        dev = resolve_device(device)
        if next(self.parameters()).device.type != dev.type:
            raise RuntimeError(f"model is on {self.device} but device={device!r}; call model.to(...) first")
        enc = tokenizer.encode_pretraining_inputs(text_a, text_b, return_tensor=True, device=dev)
        masked_ids, labels = self.create_masked_lm_inputs(
            enc["input_ids"],
            enc["attention_mask"],
            enc["special_tokens_mask"],
            mask_token_id=tokenizer.mask_token_id if mask_token_id is None else mask_token_id,
            mlm_probability=mlm_probability,
            mask_replace_prob=mask_replace_prob,
            random_replace_prob=random_replace_prob,
            ignore_index=ignore_index,
            generator=generator,
        )
        return self.get_loss(
            labels,
            torch.tensor([nsp_label], device=dev),
            masked_ids,
            enc["attention_mask"],
            enc["token_type_ids"],
            mlm_weight=mlm_weight,
            nsp_weight=nsp_weight,
            ignore_index=ignore_index,
            reduction=reduction,
        )

    # ---- masking ----------------------------------------------------------------------------
    def create_masked_lm_inputs(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        special_tokens_mask: Tensor | None = None,
        *,
        mask_token_id: int = 103,
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        ignore_index: int = -100,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """BERT masking (`MaskingRule`): each eligible token (attended, not special) is selected with
        probability mlm_probability; selected tokens become [MASK] (80 %), a random id (10 %) or stay
        (10 %). Returns (masked_input_ids, labels) with labels = original id where selected, else
        ignore_index. mask_token_id defaults to 103 as in lucid (bert-base-uncased's [MASK]); pass
        `tokenizer.mask_token_id` for any other vocabulary. attention_mask is (B, T), binary or additive."""
        if not 0 <= mask_token_id < self.config.vocab_size:
            raise ValueError(f"mask_token_id {mask_token_id} is outside the vocabulary (size {self.config.vocab_size})")
        rule = MaskingRule(mask_token_id, mlm_probability, mask_replace_prob, random_replace_prob)
        input_ids = input_ids.long()
        eligible = torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask is not None:
            eligible &= attended_tokens(attention_mask)
        if special_tokens_mask is not None:
            eligible &= special_tokens_mask == 0
        masked, selected = rule.draw_torch(generator, input_ids, eligible, self.config.vocab_size)
        labels = torch.where(selected, input_ids, ignore_index)
        return masked, labels

    # ---- predictions and accuracy ------------------------------------------------------------
    def predict_mlm_token_ids(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
    ) -> Tensor:
        scores, _ = self.forward(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        return scores.argmax(-1)  # (B, T)

    def predict_nsp_labels(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
    ) -> Tensor:
        _, nsp_scores = self.forward(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        return nsp_scores.argmax(-1)  # (B,)

    def get_mlm_accuracy(
        self,
        mlm_labels: Tensor,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        *,
        ignore_index: int = -100,
    ) -> Tensor:
        pred = self.predict_mlm_token_ids(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        return masked_accuracy(pred, mlm_labels, ignore_index)

    def get_nsp_accuracy(
        self,
        nsp_labels: Tensor,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
    ) -> Tensor:
        pred = self.predict_nsp_labels(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        return (pred == nsp_labels.reshape(-1)).float().mean()

    def get_accuracy(
        self,
        mlm_labels: Tensor,
        nsp_labels: Tensor,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        *,
        ignore_index: int = -100,
        mlm_weight: float = 1.0,
        nsp_weight: float = 1.0,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(mlm_acc, nsp_acc, weighted_acc) with weighted = (w_m*mlm + w_n*nsp) / (w_m + w_n);
        weights summing to <= 0 are refused (lucid returns the unnormalised sum)."""
        scores, nsp_scores = self.forward(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        mlm_acc = masked_accuracy(scores.argmax(-1), mlm_labels, ignore_index)
        nsp_acc = (nsp_scores.argmax(-1) == nsp_labels.reshape(-1)).float().mean()
        return mlm_acc, nsp_acc, weighted_accuracy(mlm_acc, nsp_acc, mlm_weight, nsp_weight)

    # ---- checkpoints ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, *, weights: str | Path | None = None, map_location: str = "cpu"
    ) -> BERTForPreTraining:
        """Load a checkpoint dir (config.json + model.safetensors or pytorch_model.bin), strictly.
        Weights named as lucid 2.x names them make it a lucid-origin checkpoint, whose "gelu" is the
        tanh form (`BERTConfig.checkpoint_origin`). `weights=` is lucid's spelling of the argument."""
        if (path is None) == (weights is None):
            raise TypeError("pass the checkpoint as path or weights=, not both")
        location = checkpoint_path(path if path is not None else weights)
        config = read_config(location)
        saved = read_state_dict(location, map_location)
        if is_lucid_state(saved):
            config = replace(config, checkpoint_origin="lucid")
        model = cls(config)
        state = remap_state_dict(saved, model._checkpoint_state())
        model.load_state_dict(state, strict=False)  # strictness is enforced by remap_state_dict
        model.tie_weights()
        return model.eval()

    def save_pretrained(self, path: str | Path) -> None:
        """Write config.json + model.safetensors in Hugging Face format."""
        write_checkpoint(path, self.config, self._checkpoint_state())

    def _checkpoint_state(self) -> dict[str, Tensor]:
        return untied_state(self.state_dict(), self.config.tie_word_embedding)


def bert_for_pre_training_base(**overrides) -> BERTForPreTraining:
    """bert-base-uncased architecture, randomly initialised."""
    return BERTForPreTraining(BERTConfig.base(**overrides))


def bert_for_pre_training_large(**overrides) -> BERTForPreTraining:
    """bert-large-uncased architecture, randomly initialised."""
    return BERTForPreTraining(BERTConfig.large(**overrides))


def bert_for_pre_training_tiny(**overrides) -> BERTForPreTraining:
    """A tiny model for tests and demos."""
    return BERTForPreTraining(BERTConfig.tiny(**overrides))
