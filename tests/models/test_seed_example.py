"""The lucid documentation's example runs with `lucid` replaced by `lucid_eval`."""

import textwrap
from dataclasses import asdict

import pytest
import torch

from lucid_eval import BERTConfig

SEED_EXAMPLE = """
import lucid_eval.models as models
from lucid_eval.models import BERTConfig, BERTTokenizerFast, BERTForPreTraining

device = "cpu"

# 1) Tokenizer build/save/reload
tokenizer = BERTTokenizerFast(vocab_file=VOCAB_FILE)
tokenizer.save_pretrained(TOKENIZER_DIR)
tokenizer = BERTTokenizerFast.from_pretrained(TOKENIZER_DIR)

# 2) Model config + pretrained weights
config = BERTConfig(**WEIGHTS_CONFIG)
model = BERTForPreTraining(config)
model = model.from_pretrained(weights=WEIGHTS_DIR)
model.to(device)
model.eval()

# 3) One-shot text-to-loss
loss = model.get_loss_from_text(
    tokenizer=tokenizer,
    text_a="Machine learning helps us build useful systems.",
    text_b="Tokenization quality strongly affects language model performance.",
    nsp_label=0,
    device=device,
)
print(loss.item())
base = models.bert_for_pre_training_base()
"""


@pytest.mark.slow
def test_seed_example_runs(tiny_checkpoint, tmp_path, capsys):
    namespace = {
        "VOCAB_FILE": str(tiny_checkpoint / "vocab.txt"),
        "TOKENIZER_DIR": str(tmp_path / "tok"),
        "WEIGHTS_DIR": str(tiny_checkpoint),
        # lucid's BERT_Weights.DEFAULT.config: the config's own fields
        "WEIGHTS_CONFIG": asdict(BERTConfig.from_json_file(tiny_checkpoint / "config.json")),
    }
    torch.manual_seed(0)
    exec(textwrap.dedent(SEED_EXAMPLE), namespace)
    loss = float(capsys.readouterr().out.strip())
    assert loss > 0 and namespace["loss"].ndim == 0
    assert namespace["base"].config.hidden_size == 768
    assert sum(p.numel() for p in namespace["base"].parameters()) == 110_106_428
