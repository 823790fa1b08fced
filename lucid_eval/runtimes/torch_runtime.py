"""The PyTorch reference runtimes: BERTScorer on CPU or CUDA, the same computation as the scoring graph."""

from __future__ import annotations

import numpy as np
import torch

from lucid_eval.models.model import BERTForPreTraining
from lucid_eval.models.scoring import SCORING_INPUTS, SCORING_OUTPUTS, BERTScorer
from lucid_eval.runtimes.base import Batch, Runtime, RuntimeInfo, RuntimeUnavailable, ScoreOutputs


class TorchRuntime(Runtime):
    """Scores with the reference model (gather before the decoder, no B x T x V logits)."""

    def __init__(self, name: str, checkpoint: str, device: str = "cpu", threads: int | None = None) -> None:
        self.name = name
        self.checkpoint = checkpoint
        self.device = device
        self.threads = threads
        self._scorer: BERTScorer | None = None
        self._notes: list[str] = []

    def open(self) -> None:
        if self.device == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeUnavailable(f"{self.name}: torch.cuda.is_available() is False (torch {torch.__version__})")
            # fp32 means fp32: TF32 matmuls would differ from ONNX Runtime's fp32 by ~1e-3.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            self._notes.append("TF32 disabled (torch.backends.cuda.matmul.allow_tf32=False)")
        if self.threads:
            torch.set_num_threads(self.threads)
        model = BERTForPreTraining.from_pretrained(self.checkpoint).to(self.device)
        self._scorer = BERTScorer(model).eval()

    def run(self, batch: Batch) -> ScoreOutputs:
        if self._scorer is None:
            raise RuntimeError(f"{self.name} is not open")
        inputs = batch.inputs()
        with torch.inference_mode():
            out = self._scorer(
                *(torch.from_numpy(inputs[k]).to(self.device, non_blocking=True) for k in SCORING_INPUTS)
            )
        arrays = [t.cpu().numpy() for t in out]  # synchronises a CUDA stream, so timing is honest
        return ScoreOutputs.from_named(dict(zip(SCORING_OUTPUTS, arrays, strict=True)))

    def info(self) -> RuntimeInfo:
        return RuntimeInfo(
            name=self.name,
            precision="fp32",
            device=self.device,
            providers=[f"torch:{self.device}"],
            threads=torch.get_num_threads() if self.device == "cpu" else None,
            versions={"torch": torch.__version__, "numpy": np.__version__},
            notes=list(self._notes),
        )

    def close(self) -> None:
        self._scorer = None
        if self.device == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()
