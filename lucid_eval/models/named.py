"""Where the shipped demo checkpoint lies, and the names accepted wherever a checkpoint directory is
('demo', 'bert-base-random'; lucid_eval.train.named resolves them)."""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent.parent / "data" / "demo_model"
NAMES = ("demo", "bert-base-random")
