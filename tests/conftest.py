"""Shared fixtures: a tiny tokenizer trained on CPython's docs, and a tiny model that matches it.

The tokenizer comes from the deterministic WordPiece trainer, so every session sees the same
vocabulary and therefore the same inputs (the `tokenizers` trainer numbers pieces differently per process)."""

import pydoc_data.topics
from pathlib import Path

import pytest
import torch

from lucid_eval import BERTConfig, BERTForPreTraining, BERTTokenizerFast

BERT_VOCAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "bert-base-uncased-vocab" / "vocab.txt"


@pytest.fixture(scope="session")
def tiny_tokenizer() -> BERTTokenizerFast:
    from lucid_eval.train.wordpiece import train_wordpiece

    return train_wordpiece(list(pydoc_data.topics.topics.values()), vocab_size=1000)


@pytest.fixture(scope="session")
def tiny_config(tiny_tokenizer) -> BERTConfig:
    return BERTConfig.tiny(vocab_size=tiny_tokenizer.vocab_size)


@pytest.fixture()
def tiny_model(tiny_config) -> BERTForPreTraining:
    torch.manual_seed(0)
    return BERTForPreTraining(tiny_config).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_config, tiny_tokenizer) -> Path:
    """An HF-format checkpoint dir: config.json, model.safetensors and the tokenizer files."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-ckpt")
    BERTForPreTraining(tiny_config).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def bert_vocab() -> Path:
    if not BERT_VOCAB.exists():
        pytest.skip(f"real BERT vocabulary not found at {BERT_VOCAB}")
    return BERT_VOCAB


@pytest.fixture()
def perturbed_export(monkeypatch):
    """Export graphs whose MLM bias is shifted by up to 0.01, so fp32 verification must fail."""
    import lucid_eval.export.graphs as graphs

    original = graphs.export_model_for_onnx

    def perturbed(model):
        clone = original(model)
        with torch.no_grad():
            clone.cls.predictions.bias.add_(torch.linspace(0, 0.01, clone.config.vocab_size))
        return clone

    monkeypatch.setattr(graphs, "export_model_for_onnx", perturbed)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_checkpoint) -> Path:
    """A verified export of the tiny checkpoint with every variant (200 verification pairs: enough
    for its verdicts, a fifth of the time of the default 1000)."""
    from lucid_eval.export import ExportConfig, export_model

    out = tmp_path_factory.mktemp("tiny-export")
    export_model(ExportConfig(model=tiny_checkpoint, out=out, verify_pairs=200))
    return out


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
]  # fmt: skip


@pytest.fixture()
def browser(tmp_path):
    """Run headless Chromium on a local page; skips (installing nothing) when Chromium is absent.
    Asserts the page logged nothing to the console; returns the CompletedProcess."""
    import shutil
    import subprocess

    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
    if not found:
        pytest.skip("chromium is not installed (apt-get install chromium); browser checks skipped")

    def run(page: Path, *extra: str) -> subprocess.CompletedProcess:
        command = [found, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *extra, page.as_uri()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        console = [line for line in result.stderr.splitlines() if "CONSOLE" in line and page.as_uri() in line]
        assert not console, "console messages from the page:\n" + "\n".join(console)
        return result

    return run
