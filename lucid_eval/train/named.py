"""Checkpoint names accepted by the CLI: 'demo' (shipped) and 'bert-base-random' (built once here,
from the built-in corpus and the deterministic WordPiece trainer, hence in this layer)."""

from __future__ import annotations

from pathlib import Path

from lucid_eval.models.named import DEMO_DIR, NAMES


def resolve_checkpoint(model: str | Path, cache_dir: str | Path) -> Path:
    """A checkpoint dir for `model`: a path as given, the shipped demo model, or a bert-base-shaped
    model with random weights built once in `cache_dir` (for speed and memory measurements)."""
    if str(model) == "demo":
        if not (DEMO_DIR / "config.json").exists():
            raise FileNotFoundError(f"the demo checkpoint is missing from the package ({DEMO_DIR})")
        return DEMO_DIR
    if str(model) == "bert-base-random":
        return _bert_base_random(Path(cache_dir) / "bert-base-random")
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist (or use one of {', '.join(NAMES)})")
    return path


def _bert_base_random(path: Path) -> Path:
    """bert-base shape (vocab 30522) with random weights, seed 0, and a WordPiece vocabulary learnt
    from the built-in corpus's training documents (filled up with [unusedN] entries to 30522), so
    token counts of English text stay realistic. Built once; deterministic."""
    if (path / "model.safetensors").exists():
        return path
    import torch

    from lucid_eval.data.corpus import builtin_documents, split_documents
    from lucid_eval.models.config import BERTConfig
    from lucid_eval.models.model import BERTForPreTraining
    from lucid_eval.models.tokenizer import BERTTokenizerFast
    from lucid_eval.train.wordpiece import train_wordpiece

    config = BERTConfig.base()
    train, _ = split_documents(builtin_documents())
    learnt = train_wordpiece([" ".join(d.sentences) for d in train], vocab_size=config.vocab_size)
    vocab = sorted(learnt.get_vocab().items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab] + [f"[unused{i}]" for i in range(config.vocab_size - len(vocab))]
    torch.manual_seed(0)
    model = BERTForPreTraining(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    BERTTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}).save_pretrained(path)
    return path
