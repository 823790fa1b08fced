"""run.json through RunInfo: what is saved loads back equal, in the layout run directories have
always had; older files load with defaults; a JSON file that is not a run's is refused."""

import json
from dataclasses import fields
from pathlib import Path

import pytest

from lucid_eval.harness.run_info import CorpusInfo, Counts, RunInfo, RunInfoError

KEYS = [
    "command", "seed", "max_length", "mlm_probability", "token_budget", "max_batch", "chunk_size", "corpus",
    "export", "reference", "runtimes", "runtime_info", "counts", "versions", "host", "started", "finished",
    "tolerances", "onnx_graphs", "verdicts", "late_verification", "engine",
]  # fmt: skip


def full_info(**changes) -> RunInfo:
    """A run.json as `score` writes it for an export (every field set)."""
    values = {
        "command": "lucid-eval score --export exp --corpus c.tsv --runtimes torch-cpu,ort-cpu-int8",
        "seed": 7, "max_length": 64, "mlm_probability": 0.2, "token_budget": 4096, "max_batch": 32,
        "chunk_size": 256,
        "corpus": CorpusInfo(path="/data/c.tsv", sha256="ab" * 32, format="tsv", columns={"nsp_label": "label"},
                             warnings=["2 duplicate ids"]),
        "export": {"dir": "/exports/tiny", "manifest_sha256": "cd" * 32},
        "reference": "torch-cpu",
        "runtimes": ["torch-cpu", "ort-cpu-int8"],
        "runtime_info": {"torch-cpu": {"name": "torch-cpu", "providers": ["torch:cpu"], "threads": 2}},
        "counts": Counts(read=12, scored=10, truncated=1, rejected=2),
        "versions": {"lucid_eval": "0.1.0", "python": "3.11.7"},
        "host": {"platform": "Linux", "cpu_count": 2},
        "started": "2026-01-02T03:04:05+00:00",
        "finished": "2026-01-02T03:04:09+00:00",
        "tolerances": {"int8": {"logit": 0.5, "agreement": 0.95, "agreement_on": "decisive"}},
        "onnx_graphs": {},
        "verdicts": {"torch-cpu": "REFERENCE", "ort-cpu-int8": "PASS"},
        "late_verification": {},
        "engine": {"name": "local", "scoring_wall_s": 1.234},
    }  # fmt: skip
    return RunInfo(**{**values, **changes})


def test_round_trip_keeps_every_field_and_the_layout(tmp_path: Path) -> None:
    info = full_info()
    path = info.save(tmp_path)
    assert path == tmp_path / "run.json" and RunInfo.load(tmp_path) == info
    data = json.loads(path.read_text(encoding="utf-8"))
    assert list(data) == KEYS  # no "checkpoint" for a run of an export, as before
    assert data["corpus"] == {"path": "/data/c.tsv", "sha256": "ab" * 32, "format": "tsv",
                              "columns": {"nsp_label": "label"}, "warnings": ["2 duplicate ids"]}  # fmt: skip
    assert data["counts"] == {"read": 12, "scored": 10, "truncated": 1, "rejected": 2}
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temp file left


def test_a_run_of_a_checkpoint_records_no_export(tmp_path: Path) -> None:
    checkpoint = {"path": "/ckpt", "sha256": "ef" * 32, "files": {"model.safetensors": "01" * 32}}
    info = full_info(export=None, checkpoint=checkpoint)
    data = json.loads(info.save(tmp_path).read_text(encoding="utf-8"))
    assert data["export"] is None and data["checkpoint"] == checkpoint
    assert list(data).index("checkpoint") == list(data).index("export") + 1
    assert RunInfo.load(tmp_path) == info


def test_an_older_run_json_loads_with_defaults_and_unknown_keys_are_ignored(tmp_path: Path) -> None:
    older = {
        "command": "lucid-eval run --corpus corpus.jsonl",
        "seed": 1234,
        "max_length": 128,
        "corpus": {"path": "/data/corpus.jsonl", "sha256": "ab" * 32, "format": "jsonl"},
        "export": {"dir": "/exports/bert-tiny", "manifest_sha256": "cd" * 32},
        "reference": "torch-cpu",
        "runtimes": ["torch-cpu", "ort-cpu"],
        "counts": {"read": 42, "scored": 40, "rejected": 2},
        "versions": {"lucid_eval": "0.0.9"},
        "started": "2025-01-01T10:00:00+00:00",
        "finished": "2025-01-01T10:00:09+00:00",
        "from_a_newer_version": {"anything": 1},
    }
    (tmp_path / "run.json").write_text(json.dumps(older), encoding="utf-8")
    info = RunInfo.load(tmp_path)
    assert info.seed == 1234 and info.corpus.path == "/data/corpus.jsonl" and info.corpus.columns == {}
    assert info.counts == Counts(read=42, scored=40, truncated=0, rejected=2)
    assert (info.mlm_probability, info.token_budget, info.max_batch, info.chunk_size) == (0.15, None, None, None)
    assert (info.checkpoint, info.engine, info.tolerances, info.onnx_graphs, info.verdicts) == (None, None, {}, {}, {})
    assert info.late_verification == {} and info.runtime_info == {} and info.host == {}
    assert not hasattr(info, "from_a_newer_version")
    assert {f.name for f in fields(info)} >= set(KEYS) | {"checkpoint"}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"mine": true}', 'its "versions" do not name lucid_eval'),
        ('{"versions": {"numpy": "2.0"}, "seed": 1}', 'its "versions" do not name lucid_eval'),
        ("[1, 2, 3]", "it holds an array, not a JSON object"),
        ("not json {", "it is not valid JSON"),
        ('{"versions": {"lucid_eval": "0.1.0"}, "seed": 1}', 'it lacks "max_length", "corpus", "reference"'),
        ('{"versions": {"lucid_eval": "0.1.0"}}', 'it lacks "seed", "max_length"'),
    ],
)
def test_a_json_file_that_is_not_a_run_json_is_refused(tmp_path: Path, text: str, why: str) -> None:
    (tmp_path / "run.json").write_text(text, encoding="utf-8")
    with pytest.raises(RunInfoError, match=f"run.json is not a lucid-eval run.json: {why}") as caught:
        RunInfo.load(tmp_path)
    assert str(tmp_path) in str(caught.value) and isinstance(caught.value, ValueError)


def test_nested_objects_are_checked_too(tmp_path: Path) -> None:
    data = full_info().to_dict()
    for broken, why in (({**data, "counts": [1, 2]}, '"counts" is not an object'),
                        ({**data, "counts": {"read": 1}}, 'it lacks "counts.scored", "counts.rejected"')):  # fmt: skip
        (tmp_path / "run.json").write_text(json.dumps(broken), encoding="utf-8")
        with pytest.raises(RunInfoError, match=why):
            RunInfo.load(tmp_path)


def test_a_directory_without_run_json_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a lucid-eval run directory: run.json is missing"):
        RunInfo.load(tmp_path)
