"""The bench's peer row: Optimum's ORTModelForMaskedLM on the same masks as the usual PyTorch loop.

Runs where the optimum extra is installed (its own venv: .ci/run runs `pytest -m optimum` there)."""

import csv
import pydoc_data.topics

import pytest

from lucid_eval.bench.measure import BASELINE, OPTIMUM, Job, measure
from lucid_eval.data.pairs import split_sentences

pytestmark = pytest.mark.optimum


def test_the_optimum_row_scores_the_same_masks_as_the_baseline(tiny_export, tmp_path) -> None:
    pytest.importorskip("optimum.onnxruntime", reason="optimum-onnx is not installed (the optimum extra)")
    sentences = [s for v in list(pydoc_data.topics.topics.values())[:5] for s in split_sentences(v) if len(s) > 30]
    corpus = tmp_path / "pairs.tsv"
    with open(corpus, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t")
        writer.writerow(["id", "text_a", "text_b", "nsp_label"])
        writer.writerows([i, sentences[i], sentences[i + 1], 0] for i in range(24))
    job = Job(BASELINE, str(tiny_export), str(corpus), threads=1)
    baseline, peer = measure(job), measure(Job(**{**job.__dict__, "name": OPTIMUM}))
    assert (
        peer["implementation"].startswith("optimum ORTModelForMaskedLM") and "CPUExecutionProvider" in peer["providers"]
    )
    assert peer["masked_tokens"] == baseline["masked_tokens"] > 0 and peer["pairs"] == 24
    assert abs(peer["mlm_loss"] - baseline["mlm_loss"]) <= 1e-4 and peer["mlm_accuracy"] == baseline["mlm_accuracy"]
    assert peer["nsp_accuracy"] != peer["nsp_accuracy"]  # NaN: the fill-mask graph has no NSP head
