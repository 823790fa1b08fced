"""Mandatory export verification: ONNX Runtime on real tokenized text pairs against PyTorch.

Every case uses real text pairs with both segments and padding, and shapes other than the dummy
the graph was exported with (batch 1 at the longest sequence, batch 7, a padded batch of 8).
Logits are compared at unpadded positions only. Failures raise with the numbers.
"""

from __future__ import annotations

import pydoc_data.topics
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lucid_eval.models.model import BERTForPreTraining
from lucid_eval.models.scoring import SCORING_INPUTS, SCORING_OUTPUTS, BERTScorer
from lucid_eval.models.tokenizer import BERTTokenizerFast
from lucid_eval.tolerances import decisive, tolerance_for


class ExportVerificationError(RuntimeError):
    """An exported graph does not reproduce the PyTorch model within the stated tolerances."""


@dataclass(frozen=True)
class Case:
    name: str
    inputs: dict[str, np.ndarray]  # scoring-graph inputs; the full graph uses the first three


def _sentences() -> list[str]:
    text = " ".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if 20 < len(s.strip()) < 300 and "\n" not in s.strip()]


def build_cases(tokenizer: BERTTokenizerFast, max_length: int, vocab_size: int, seed: int = 0) -> list[Case]:
    """Real pairs of varied length: a padded batch of 8, batch 7, and batch 1 at max_length."""
    rng = np.random.default_rng(seed)
    sents = _sentences()
    pick = rng.choice(len(sents), size=64, replace=False)
    pairs = [(sents[i], sents[j]) for i, j in zip(pick[::2], pick[1::2], strict=True)]
    long_a = " ".join(sents[k] for k in pick[:30])
    long_b = " ".join(sents[k] for k in pick[30:60])
    groups = {
        "padded batch 8": (pairs[:8], min(128, max_length)),
        "batch 7": (pairs[8:15], min(64, max_length)),
        f"batch 1 x {max_length} tokens": ([(long_a, long_b)], max_length),
    }
    cases = []
    for name, (group, length) in groups.items():
        a, b = [p[0] for p in group], [p[1] for p in group]
        enc = tokenizer.batch_encode_plus(a, b, max_length=length)
        arrays = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
        eligible = (arrays["attention_mask"] > 0) & (arrays["special_tokens_mask"] == 0)
        chosen = eligible & (rng.random(eligible.shape) < 0.15)
        chosen[np.arange(len(chosen)), eligible.argmax(1)] |= True  # at least one masked token each
        width = int(chosen.sum(1).max())
        positions = np.zeros((len(chosen), width), dtype=np.int64)
        weights = np.zeros((len(chosen), width), dtype=np.float32)
        for row, cols in enumerate(chosen):
            idx = np.flatnonzero(cols)
            positions[row, : len(idx)], weights[row, : len(idx)] = idx, 1.0
        labels = np.take_along_axis(arrays["input_ids"], positions, 1)
        ids = arrays["input_ids"].copy()
        ids[chosen] = tokenizer.mask_token_id
        cases.append(Case(name, {
            "input_ids": ids,
            "attention_mask": arrays["attention_mask"],
            "token_type_ids": arrays["token_type_ids"],
            "masked_lm_positions": positions,
            "masked_lm_ids": labels,
            "masked_lm_weights": weights,
            "next_sentence_labels": rng.integers(0, 2, len(chosen)).astype(np.int64),
        }))  # fmt: skip
    return cases


def _torch_full(model: BERTForPreTraining, case: Case) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(*(torch.from_numpy(case.inputs[k]) for k in ("input_ids", "attention_mask", "token_type_ids")))
    return [t.numpy() for t in out]


def _torch_scoring(model: BERTForPreTraining, case: Case) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = BERTScorer(model)(*(torch.from_numpy(case.inputs[k]) for k in SCORING_INPUTS))
    return {name: t.numpy() for name, t in zip(SCORING_OUTPUTS, out, strict=True)}


def _compare(
    case: Case, graph: str, ref: dict[str, np.ndarray], got: dict[str, np.ndarray], margin: float
) -> dict[str, Any]:
    """Numbers for one case: logit diffs where it counts, argmax agreement, loss deltas."""
    if graph == "full":
        where = case.inputs["attention_mask"].astype(bool)
        ref_logits, got_logits = ref["prediction_scores"][where], got["prediction_scores"][where]
        nsp_ref, nsp_got = ref["seq_relationship_scores"], got["seq_relationship_scores"]
        mlm_shift = nsp_shift = None
    else:
        where = case.inputs["masked_lm_weights"] > 0
        ref_logits, got_logits = ref["mlm_logits"][where], got["mlm_logits"][where]
        nsp_ref, nsp_got = ref["nsp_logits"], got["nsp_logits"]
        count = ref["mlm_count"].sum()
        mlm_shift = float((got["mlm_loss_sum"].sum() - ref["mlm_loss_sum"].sum()) / count)
        nsp_shift = float(got["nsp_loss"].mean() - ref["nsp_loss"].mean())
    diff = np.abs(ref_logits - got_logits)
    agree = ref_logits.argmax(-1) == got_logits.argmax(-1)
    nsp_agree = nsp_ref.argmax(-1) == nsp_got.argmax(-1)
    judged, nsp_judged = decisive(ref_logits, margin), decisive(nsp_ref, margin)
    nsp_diff = np.abs(nsp_ref - nsp_got)
    finite = bool(np.isfinite(diff).all() and np.isfinite(nsp_diff).all())
    return {
        "case": case.name,
        "shape": list(case.inputs["input_ids"].shape),
        "finite": finite,
        "max_abs_logit_diff": float(max(diff.max(), nsp_diff.max())),
        "mean_abs_logit_diff": float(diff.mean()),
        "mlm_agreement": float(agree.mean()),
        "nsp_agreement": float(nsp_agree.mean()),
        "mlm_decisive": int(judged.sum()),
        "mlm_decisive_agreement": float(agree[judged].mean()) if judged.any() else 1.0,
        "nsp_decisive": int(nsp_judged.sum()),
        "nsp_decisive_agreement": float(nsp_agree[nsp_judged].mean()) if nsp_judged.any() else 1.0,
        "mlm_tokens": int(where.sum()),
        "pairs": len(nsp_ref),
        "mlm_loss_shift": mlm_shift,  # signed: ONNX minus PyTorch mean loss, None for the full graph
        "nsp_loss_shift": nsp_shift,
        "d_mlm_loss": None if mlm_shift is None else abs(mlm_shift),
        "d_nsp_loss": None if nsp_shift is None else abs(nsp_shift),
    }


def judge(results: list[dict[str, Any]], precision: str) -> list[str]:
    """Failure messages (empty when every case is within the precision's tolerance)."""
    tol = tolerance_for(precision)
    failures = []
    for r in results:
        where = f"{r['graph']} graph, {r['case']} {r['shape']}"
        if not r["finite"]:
            failures.append(f"{where}: NaN/Inf in outputs")
        if tol.logit is not None and r["max_abs_logit_diff"] > tol.logit:
            failures.append(f"{where}: max |Δ logit| {r['max_abs_logit_diff']:.3g} > {tol.logit:g}")
        for key in ("mlm", "nsp"):
            share = r[f"{key}_decisive_agreement"]
            if share < tol.agreement:
                failures.append(
                    f"{where}: {key} argmax agreement {share:.4f} < {tol.agreement:g} on {r[f'{key}_decisive']} "
                    f"predictions with a reference margin >= {tol.margin:g} (all predictions: {r[f'{key}_agreement']:.4f})"
                )
    failures += _judge_losses([r for r in results if r["mlm_loss_shift"] is not None], tol.loss)
    return failures


def _judge_losses(scored: list[dict[str, Any]], tolerance: float) -> list[str]:
    """The loss tolerance bounds the shift of a *mean* loss, so it is judged on all cases pooled
    (per masked token and per pair), as score comparisons judge a corpus: a single example's loss
    moves by more than a corpus mean under int8 without the model being any different."""
    failures = []
    for key, weight in (("mlm", "mlm_tokens"), ("nsp", "pairs")):
        total = sum(r[weight] for r in scored)
        if not total:
            continue
        shift = sum(r[f"{key}_loss_shift"] * r[weight] for r in scored) / total
        if abs(shift) > tolerance:
            per_case = ", ".join(f"{r['case']} {r[f'{key}_loss_shift']:+.3g}" for r in scored)
            failures.append(
                f"scoring graph, all cases ({total} {weight}): |Δ mean {key} loss| {abs(shift):.3g} > {tolerance:g} "
                f"(per case: {per_case})"
            )
    return failures


def verify_variant(
    model: BERTForPreTraining,
    cases: list[Case],
    graphs: dict[str, Path],
    precision: str,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run both graphs of one variant on every case and judge them against PyTorch."""
    from lucid_eval.runtimes.ort_session import make_session

    results = []
    for graph, path in graphs.items():
        session = make_session(path, device).session
        names = [o.name for o in session.get_outputs()]
        for case in cases:
            feed = {k: case.inputs[k] for k in (i.name for i in session.get_inputs())}
            got = dict(zip(names, session.run(None, feed), strict=True))
            if graph == "full":
                ref = dict(zip(names, _torch_full(model, case), strict=True))
            else:
                ref = _torch_scoring(model, case)
            results.append({"graph": graph, **_compare(case, graph, ref, got, tolerance_for(precision).margin)})
    failures = judge(results, precision)
    return {
        "device": device,
        "tolerance": tolerance_for(precision).as_dict(),
        "cases": results,
        "passed": not failures,
        "failures": failures,
    }
