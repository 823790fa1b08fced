"""Device names as lucid spells them ('cpu', 'gpu'), mapped onto torch devices."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """Map lucid's device names ('cpu', 'gpu') to torch; asking for a GPU without CUDA is an error."""
    name = str(device)
    if name in ("gpu", "cuda") or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device={device!r} asks for a CUDA GPU, but torch.cuda.is_available() is False "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); use device='cpu'"
            )
        return torch.device("cuda" if name == "gpu" else name)
    if name != "cpu":
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    return torch.device("cpu")
