"""BERT's masking rule, written once for PyTorch tensors and numpy arrays alike.

`BERTForPreTraining.create_masked_lm_inputs` (torch, one generator per batch), the harness's
`encode_chunk` (numpy, one stream per example, so masks do not depend on batching) and export
verification's cases (numpy) all mask with `MaskingRule`. Both `draw_*` methods take the same three
draws, each covering every token, in the same order: selection uniforms, replacement uniforms,
random ids; so the random numbers consumed depend on the shape only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class MaskingRule:
    """Each eligible token (attended, not special) is selected with probability `mlm_probability`;
    a selected token becomes [MASK] (`mask_replace_prob`), a uniform random id
    (`random_replace_prob`) or stays itself (the rest)."""

    mask_token_id: int
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1

    def __post_init__(self) -> None:
        for name in ("mlm_probability", "mask_replace_prob", "random_replace_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if self.mask_replace_prob + self.random_replace_prob > 1.0:
            raise ValueError("mask_replace_prob + random_replace_prob must be <= 1")

    def select(self, eligible: Array, select_u: Array) -> Array:
        """Selected tokens, from uniforms in [0, 1) of the ids' shape."""
        return (select_u < self.mlm_probability) & eligible

    def replace(self, ids: Array, selected: Array, replace_u: Array, random_ids: Array) -> Array:
        """The masked ids, from uniforms in [0, 1) and random ids of the ids' shape."""
        where = torch.where if isinstance(ids, torch.Tensor) else np.where
        to_mask = selected & (replace_u < self.mask_replace_prob)
        to_random = (
            selected
            & (replace_u >= self.mask_replace_prob)
            & (replace_u < self.mask_replace_prob + self.random_replace_prob)
        )
        return where(to_random, random_ids, where(to_mask, self.mask_token_id, ids))

    def draw_numpy(
        self,
        rng: np.random.Generator,
        ids: np.ndarray,
        eligible: np.ndarray,
        vocab_size: int,
        *,
        at_least_one: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(masked ids, selected), random ids in [0, vocab_size). `at_least_one` also selects the
        first eligible token of every row (last axis), so no row that has one goes unmasked."""
        select_u = rng.random(ids.shape)
        replace_u = rng.random(ids.shape)
        random_ids = rng.integers(0, vocab_size, ids.shape, dtype=np.int64)
        selected = self.select(eligible, select_u)
        if at_least_one:
            first = eligible.argmax(-1)[..., None]  # (..., 1)
            np.put_along_axis(selected, first, eligible.any(-1, keepdims=True), -1)
        return self.replace(ids, selected, replace_u, random_ids), selected

    def draw_torch(
        self, generator: torch.Generator | None, ids: torch.Tensor, eligible: torch.Tensor, vocab_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked ids, selected) on the ids' device; the draws come from `generator` (the global
        stream when None) on the generator's own device."""
        device = generator.device if generator is not None else ids.device
        select_u = torch.rand(ids.shape, generator=generator, device=device).to(ids.device)
        replace_u = torch.rand(ids.shape, generator=generator, device=device).to(ids.device)
        random_ids = torch.randint(0, vocab_size, ids.shape, generator=generator, device=device).to(ids.device)
        selected = self.select(eligible, select_u)
        return self.replace(ids, selected, replace_u, random_ids), selected
