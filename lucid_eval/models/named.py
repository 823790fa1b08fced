"""Where the shipped demo checkpoint lies, and the names accepted wherever a checkpoint directory is
('demo', 'bert-base-random'; lucid_eval.train.named resolves them)."""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent.parent / "data" / "demo_model"
NAMES = ("demo", "bert-base-random")


def local_or_demo(path: str | Path) -> Path:
    """`path`, or the shipped demo checkpoint for the name "demo" unless a directory of that name exists here."""
    return DEMO_DIR if str(path) == "demo" and not Path(path).exists() else Path(path)
