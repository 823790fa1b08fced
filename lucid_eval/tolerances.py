"""The tolerances a runtime is judged by, per precision: one table for export verification,
score comparisons and reports, so every verdict uses the same numbers."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Tolerance:
    logit: float | None  # max |Δ logit| at unpadded/masked positions; None = not judged
    agreement: float  # minimum share of identical argmax predictions (MLM and NSP)
    loss: float  # max |Δ mean loss| (MLM and NSP)
    # Agreement is judged on decisive predictions only: where the reference's best logit beats the
    # runner-up by at least this margin. Below it the argmax is a coin toss that reduced precision
    # may flip without the model being any different (random-weight models are all coin tosses).
    margin: float = 0.0

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


TOLERANCES: dict[str, Tolerance] = {
    # fp32 ONNX Runtime vs PyTorch: the same arithmetic up to kernel order.
    "fp32": Tolerance(logit=1e-4, agreement=1.0, loss=1e-4),
    # Reduced precision changes logits by design; judge what users see: predictions and losses.
    "fp16": Tolerance(logit=None, agreement=0.99, loss=0.01, margin=0.05),
    "int8": Tolerance(logit=None, agreement=0.99, loss=0.05, margin=0.5),
}


def tolerance_for(precision: str) -> Tolerance:
    try:
        return TOLERANCES[precision]
    except KeyError:
        raise ValueError(f"no tolerance for precision {precision!r}; known: {sorted(TOLERANCES)}") from None


def decisive(logits, margin: float):
    """Boolean mask over logits[..., :] rows whose top-1 beats top-2 by at least `margin`."""
    import numpy as np

    if margin <= 0:
        return np.ones(logits.shape[:-1], dtype=bool)
    top2 = np.partition(logits, -2, axis=-1)[..., -2:]
    return (top2[..., 1] - top2[..., 0]) >= margin
