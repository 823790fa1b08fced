"""The manifest is checked against its schema before anything trusts it: integrity checks cannot be
switched off by deleting a key, and one variant's graph cannot run under another's name."""

import json
import shutil

import pytest

from lucid_eval.export import ExportBundle, ExportError


@pytest.fixture()
def export_copy(tiny_export, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_export, copy)
    return copy


def _edit(path, change):
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps(change(manifest)))


def _drop(key):
    return lambda m: {k: v for k, v in m.items() if k != key}


def _swap_graphs(m):
    m["variants"]["fp32"]["graphs"], m["variants"]["int8"]["graphs"] = (
        m["variants"]["int8"]["graphs"],
        m["variants"]["fp32"]["graphs"],
    )
    return m


def _extra_graph(m):
    m["variants"]["fp32"]["graphs"]["extra"] = "fp32/extra.onnx"
    return m


def _unlisted_graph(m):
    del m["files"]["int8/scoring.onnx"]
    return m


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: [], "must hold a JSON object, not list"),
        (_drop("files"), "'files' is missing or not a dict"),
        (lambda m: {**m, "files": list(m["files"])}, "'files' is missing or not a dict"),
        (_drop("model_config"), "'model_config' is missing or not a dict"),
        (lambda m: {**m, "model_config": {**m["model_config"], "hidden_size": "64"}}, "hidden_size must be an integer"),
        (_swap_graphs, r"variant fp32: graphs must be exactly \{'full': 'fp32/full.onnx'"),
        (_extra_graph, "variant fp32: graphs must be exactly"),
        (_unlisted_graph, "variant int8: int8/scoring.onnx not listed in 'files'"),
        (lambda m: {**m, "files": {**m["files"], "../outside": {"sha256": "0" * 64}}}, "lies outside the export"),
        (_drop("verdict"), "older lucid-eval without verdicts"),
    ],
    ids=[
        "list",
        "no-files",
        "files-list",
        "no-model-config",
        "bad-config",
        "swapped",
        "extra-graph",
        "unlisted",
        "outside",
        "no-verdict",
    ],  # fmt: skip
)
def test_a_manifest_off_its_schema_is_refused(export_copy, change, message):
    _edit(export_copy, change)
    with pytest.raises(ExportError, match=message):
        ExportBundle.load(export_copy)


def test_the_untouched_manifest_loads(export_copy):
    assert set(ExportBundle.load(export_copy).variants) == {"fp32", "fused", "int8", "fp16"}
