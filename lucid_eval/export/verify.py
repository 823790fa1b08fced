"""Mandatory export verification: ONNX Runtime on real tokenized text pairs against PyTorch.

Cases are real text pairs with both segments and padding, in shapes other than the dummy the graph
was exported with (a padded batch of 8, batch 7, batch 1 at the longest sequence), plus `n_pairs`
short pairs in batches of 16 so that agreement statistics have enough predictions to decide.
PyTorch runs once per case; every variant's graphs are compared with it and the outputs dropped,
so memory stays at one case. Logits are compared at unpadded (full graph) or masked (scoring graph)
positions. The verdict of each graph comes from lucid_eval.verdict; a variant takes the worse one.
"""

from __future__ import annotations

import math
import pydoc_data.topics
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lucid_eval.errors import UserError
from lucid_eval.export.manifest import VerificationSettings
from lucid_eval.models.masking import MaskingRule
from lucid_eval.models.model import BERTForPreTraining
from lucid_eval.models.padding import length_mask, pad_rows
from lucid_eval.models.scoring import FULL_INPUTS, SCORING_INPUTS, SCORING_OUTPUTS, BERTScorer
from lucid_eval.models.tokenizer import BERTTokenizerFast
from lucid_eval.tolerances import Tolerance, decisive
from lucid_eval.verdict import Agreement, Evidence, Verdict, judge, worst

PAIR_BATCH = 16
CALIBRATION_PAIRS = 256
CALIBRATION_MAX_LENGTH = 128  # tokens per calibration pair, as score's default --max-length


class ExportVerificationError(UserError, RuntimeError):
    """An exported graph does not reproduce the PyTorch model within the stated tolerances."""


@dataclass(frozen=True)
class Case:
    name: str
    group: str  # cases of one group are reported together
    inputs: dict[str, np.ndarray]  # scoring-graph inputs; the full graph uses the first three


def _sentences() -> list[str]:
    text = re.sub(r"\s+", " ", " ".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)))
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if 20 < len(s.strip()) < 300]


def _case(name: str, group: str, tokenizer: BERTTokenizerFast, pairs, length: int, vocab_size: int, rng) -> Case:
    """Pairs tokenized, padded and masked by BERT's rule, with at least one masked token per row."""
    enc = tokenizer.batch_encode_plus([p[0] for p in pairs], [p[1] for p in pairs], max_length=length)
    arrays = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}  # (B, T) each
    eligible = (arrays["attention_mask"] > 0) & (arrays["special_tokens_mask"] == 0)
    rule = MaskingRule(tokenizer.mask_token_id)
    ids, selected = rule.draw_numpy(rng, arrays["input_ids"], eligible, vocab_size, at_least_one=True)
    positions = pad_rows([np.flatnonzero(row) for row in selected])  # (B, most masked)
    weights = length_mask(selected.sum(1), positions.shape[1], np.float32)  # (B, most masked)
    return Case(name, group, {
        "input_ids": ids,
        "attention_mask": arrays["attention_mask"],
        "token_type_ids": arrays["token_type_ids"],
        "masked_lm_positions": positions,
        "masked_lm_ids": np.take_along_axis(arrays["input_ids"], positions, 1),
        "masked_lm_weights": weights,
        "next_sentence_labels": rng.integers(0, 2, len(ids)).astype(np.int64),
    })  # fmt: skip


def build_cases(
    tokenizer: BERTTokenizerFast, max_length: int, vocab_size: int, seed: int = 0, n_pairs: int = 0
) -> list[Case]:
    """Real pairs of varied length: a padded batch of 8, batch 7, batch 1 at max_length, and
    `n_pairs` more pairs (disjoint sentences) in batches of PAIR_BATCH at up to 64 tokens."""
    rng = np.random.default_rng(seed)
    sents = _sentences()
    pick = _pick(rng, len(sents), n_pairs)
    pairs = [(sents[i], sents[j]) for i, j in zip(pick[:64:2], pick[1:64:2], strict=True)]
    long_a = " ".join(sents[k] for k in pick[:30])
    long_b = " ".join(sents[k] for k in pick[30:60])
    groups = {
        "padded batch 8": (pairs[:8], min(128, max_length)),
        "batch 7": (pairs[8:15], min(64, max_length)),
        f"batch 1 x {max_length} tokens": ([(long_a, long_b)], max_length),
    }
    cases = [_case(name, name, tokenizer, group, length, vocab_size, rng) for name, (group, length) in groups.items()]
    extra = [(sents[i], sents[j]) for i, j in zip(pick[64::2], pick[65::2], strict=True)]
    group = f"{n_pairs} short pairs"
    for start in range(0, len(extra), PAIR_BATCH):
        chunk = extra[start : start + PAIR_BATCH]
        name = f"pairs {start}-{start + len(chunk) - 1}"
        cases.append(_case(name, group, tokenizer, chunk, min(64, max_length), vocab_size, rng))
    return cases


def _pick(rng: np.random.Generator, available: int, n_pairs: int) -> np.ndarray:
    """The sentences verification uses, in order: 64 for the shape cases, then two per pair."""
    need = 64 + 2 * n_pairs
    if need > available:
        raise ValueError(f"verification pairs: at most {(available - 64) // 2} available, asked for {n_pairs}")
    return rng.choice(available, size=need, replace=False)


def calibration_pairs(verify_pairs: int, seed: int = 0, n_pairs: int = CALIBRATION_PAIRS) -> list[tuple[str, str]]:
    """Up to `n_pairs` sentence pairs the verification (same seed, `verify_pairs`) does not use, so
    a static int8 graph is not judged on the data its activation ranges were fitted to."""
    sents = _sentences()
    used = {sents[i] for i in _pick(np.random.default_rng(seed), len(sents), verify_pairs)}
    free = [s for s in dict.fromkeys(sents) if s not in used]  # by text: the docs repeat some sentences
    pairs = list(zip(free[0 : 2 * n_pairs : 2], free[1 : 2 * n_pairs : 2], strict=False))
    if len(pairs) < PAIR_BATCH:
        raise ValueError(f"static int8 calibration needs {PAIR_BATCH}+ pairs the verification does not use; "
                         f"{len(pairs)} are left after {verify_pairs} verification pairs: lower --verify-pairs")  # fmt: skip
    return pairs


@dataclass(frozen=True)
class Calibration:
    """Text pairs to calibrate static int8 on, and the manifest's record of where they came from."""

    pairs: list[tuple[str, str]]
    source: dict[str, Any]


def calibration_inputs(
    tokenizer: BERTTokenizerFast,
    max_length: int,
    vocab_size: int,
    verify_pairs: int,
    seed: int = 0,
    pairs: list[tuple[str, str]] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Scoring-graph inputs for static int8 calibration: `pairs` (default: `calibration_pairs`)
    masked like the verification's, in batches of PAIR_BATCH at up to `max_length` tokens."""
    pairs = calibration_pairs(verify_pairs, seed) if pairs is None else pairs
    rng = np.random.default_rng(seed + 1)
    return [
        _case("calibration", "calibration", tokenizer, pairs[i : i + PAIR_BATCH], max_length, vocab_size, rng).inputs
        for i in range(0, len(pairs), PAIR_BATCH)
    ]


@dataclass
class _Tally:
    """Evidence of one graph of one variant, accumulated case by case."""

    counts: dict[str, list[int]] = field(default_factory=lambda: {"mlm": [0, 0, 0, 0], "nsp": [0, 0, 0, 0]})
    max_diff: dict[str, float] = field(default_factory=lambda: {"mlm": math.nan, "nsp": math.nan})
    n_failed: int = 0
    loss: dict[str, list[float]] = field(default_factory=lambda: {"mlm": [0.0, 0], "nsp": [0.0, 0]})  # Σ shift·w, Σ w
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(
        self, case: Case, graph: str, ref: dict[str, np.ndarray], got: dict[str, np.ndarray], margin: float
    ) -> None:
        if graph == "full":
            where = case.inputs["attention_mask"].astype(bool)
            mlm_ref, mlm_got = ref["prediction_scores"][where], got["prediction_scores"][where]
            nsp_ref, nsp_got = ref["seq_relationship_scores"], got["seq_relationship_scores"]
        else:
            where = case.inputs["masked_lm_weights"] > 0
            mlm_ref, mlm_got = ref["mlm_logits"][where], got["mlm_logits"][where]
            nsp_ref, nsp_got = ref["nsp_logits"], got["nsp_logits"]
            self._add_loss(
                "mlm", float(got["mlm_loss_sum"].sum() - ref["mlm_loss_sum"].sum()), float(ref["mlm_count"].sum())
            )
            self._add_loss("nsp", float(got["nsp_loss"].sum() - ref["nsp_loss"].sum()), len(nsp_ref))
        row = self.groups.setdefault(case.group, {"case": case.name if case.name == case.group else case.group,
                                                  "shapes": [], "max_abs_logit_diff": 0.0, "mlm": [0, 0], "nsp": [0, 0]})  # fmt: skip
        row["shapes"].append(list(case.inputs["input_ids"].shape))
        for task, r, g in (("mlm", mlm_ref, mlm_got), ("nsp", nsp_ref, nsp_got)):
            finite = np.isfinite(g).all(-1)
            self.n_failed += int((~finite).sum())
            agree = (r.argmax(-1) == g.argmax(-1)) & finite
            judged = decisive(r, margin)
            c = self.counts[task]
            c[0], c[1] = c[0] + agree.size, c[1] + int((~agree).sum())
            c[2], c[3] = c[2] + int(judged.sum()), c[3] + int((~agree & judged).sum())
            diff = float(np.abs(r - g).max()) if r.size else math.nan
            self.max_diff[task] = diff if math.isnan(self.max_diff[task]) else max(self.max_diff[task], diff)
            row["max_abs_logit_diff"] = max(row["max_abs_logit_diff"], diff)
            row[task][0] += agree.size
            row[task][1] += int((~agree).sum())

    def _add_loss(self, task: str, shift_sum: float, weight: float) -> None:
        self.loss[task][0] += shift_sum
        self.loss[task][1] += weight

    def evidence(self, graph: str) -> Evidence:
        def shift(task: str) -> float | None:
            if graph == "full":
                return None
            total, weight = self.loss[task]
            return total / weight if weight else math.nan

        return Evidence(
            mlm=Agreement(*self.counts["mlm"]),
            nsp=Agreement(*self.counts["nsp"]),
            max_abs_mlm_logit_diff=self.max_diff["mlm"],
            max_abs_nsp_logit_diff=self.max_diff["nsp"],
            d_mlm_loss=shift("mlm"),
            d_nsp_loss=shift("nsp"),
            n_failed=self.n_failed,
        )

    def case_rows(self, graph: str) -> list[dict[str, Any]]:
        return [
            {"graph": graph, "case": r["case"], "shapes": r["shapes"], "max_abs_logit_diff": r["max_abs_logit_diff"],
             "mlm_compared": r["mlm"][0], "mlm_flips": r["mlm"][1], "nsp_compared": r["nsp"][0], "nsp_flips": r["nsp"][1]}
            for r in self.groups.values()
        ]  # fmt: skip


def _torch_outputs(model: BERTForPreTraining, case: Case) -> dict[str, dict[str, np.ndarray]]:
    with torch.no_grad():
        full = model(*(torch.from_numpy(case.inputs[k]) for k in FULL_INPUTS))
        scored = BERTScorer(model)(*(torch.from_numpy(case.inputs[k]) for k in SCORING_INPUTS))
    return {
        "full": {"prediction_scores": full[0].numpy(), "seq_relationship_scores": full[1].numpy()},
        "scoring": {name: t.numpy() for name, t in zip(SCORING_OUTPUTS, scored, strict=True)},
    }


def verify_variants(
    model: BERTForPreTraining,
    cases: list[Case],
    variants: dict[str, dict[str, Path]],
    tolerances: dict[str, Tolerance],
    device: str = "cpu",
    allow_fallback: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run both graphs of every variant on every case against PyTorch; each variant's verification
    record (verdict, reasons, per-graph checks and evidence, per-case numbers) for the manifest."""
    from lucid_eval.export.sessions import make_session

    sessions = {
        (v, g): make_session(path, device, allow_fallback=allow_fallback)
        for v, graphs in variants.items()
        for g, path in graphs.items()
    }
    tallies = {key: _Tally() for key in sessions}
    # bert-base on 2 cores: ~0.15 s per pair and variant; a bar where a terminal can show one
    for case in tqdm(cases, desc=f"verifying {', '.join(variants)}", unit="batch", disable=None, leave=False):
        ref = _torch_outputs(model, case)
        for (variant, graph), result in sessions.items():
            session = result.session
            names = [o.name for o in session.get_outputs()]
            feed = {i.name: case.inputs[i.name] for i in session.get_inputs()}
            got = dict(zip(names, session.run(names, feed), strict=True))
            tallies[variant, graph].add(case, graph, ref[graph], got, tolerances[variant].margin)
    records = {}
    for variant in variants:
        tol = tolerances[variant]
        graphs, reasons, rows = {}, [], []
        fallback = "; ".join(sorted({r.fallback for (v, _), r in sessions.items() if v == variant and r.fallback}))
        for graph in variants[variant]:
            tally = tallies[variant, graph]
            evidence = tally.evidence(graph)
            if fallback:
                evidence = Evidence(**{**evidence.__dict__, "fallback": fallback})
            judged = judge(evidence, tol)
            graphs[graph] = {**judged.as_dict(), "evidence": asdict(evidence)}
            reasons += [f"{graph} graph: {r}" for r in judged.reasons]
            rows += tally.case_rows(graph)
        records[variant] = {
            "verdict": worst(Verdict(g["verdict"]) for g in graphs.values()).value,
            "device": device,
            "providers": sorted({p for (v, _), r in sessions.items() if v == variant for p in r.providers}),
            "tolerance": tol.as_dict(),
            "reasons": reasons,
            "graphs": graphs,
            "cases": rows,
        }
    return records


def verify_bundle_variant(
    bundle: Any, variant: str, device: str, tolerance: Tolerance, allow_fallback: bool = False
) -> dict[str, Any]:
    """Verify one variant of an export now, on `device`, with the export's own verification cases:
    for graphs that could not be verified at export time (NOT VERIFIED), before anything scores them."""
    model = BERTForPreTraining.from_pretrained(bundle.checkpoint).eval()
    settings = bundle.manifest.verification or VerificationSettings()
    cfg = bundle.config
    cases = build_cases(
        bundle.tokenizer,
        min(settings.max_length, cfg.max_position_embeddings),
        cfg.vocab_size,
        seed=settings.seed,
        n_pairs=settings.pairs,
    )
    graphs = {g: bundle.path / rel for g, rel in bundle.manifest.variants[variant].graphs.items()}
    return verify_variants(model, cases, {variant: graphs}, {variant: tolerance}, device, allow_fallback)[variant]
