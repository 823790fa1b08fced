"""Static int8 calibration pairs from the user's own text-pair file (`lucid-eval export --calibration`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lucid_eval.export.verify import CALIBRATION_PAIRS, PAIR_BATCH, Calibration
from lucid_eval.files import sha256_file
from lucid_eval.harness.corpus import CorpusError, CorpusReader


def calibration_from_file(path: str | Path, n_pairs: int = CALIBRATION_PAIRS, seed: int = 0) -> Calibration:
    """Up to `n_pairs` pairs drawn uniformly (reservoir sampling, `seed`) from the valid rows of a
    text-pair file, for `lucid-eval export --calibration`, with the file's hash and row counts."""
    reader, rng = CorpusReader(path), np.random.default_rng(seed)
    pairs, seen = [], 0
    for record in reader:
        seen += 1
        if len(pairs) < n_pairs:
            pairs.append((record.text_a, record.text_b))
        elif (slot := rng.integers(seen)) < n_pairs:
            pairs[slot] = (record.text_a, record.text_b)
    if len(pairs) < PAIR_BATCH:
        raise CorpusError(path, f"static int8 calibration needs at least {PAIR_BATCH} valid text pairs, "
                                f"found {seen} ({reader.stats.rejected} rows rejected)")  # fmt: skip
    source = {"data": "file", "file": str(Path(path).resolve()), "sha256": sha256_file(path), "valid_pairs": seen,
              "rejected_rows": reader.stats.rejected, "sampled_pairs": len(pairs), "seed": seed}  # fmt: skip
    return Calibration(pairs, source)
