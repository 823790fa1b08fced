"""The manifest is checked against its schema before anything trusts it: integrity checks cannot be
switched off by deleting a key, and one variant's graph cannot run under another's name."""

import json
import shutil

import pytest

from lucid_eval.export import ExportBundle, ExportError
from lucid_eval.export.manifest import Manifest


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


def _bad_tolerance(m):
    m["tolerances"]["int8"]["agreement"] = 2.0
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
        (lambda m: {**m, "verdict": "passed"}, "'verdict' 'passed' is not one of"),
        (lambda m: {**m, "opset": "17"}, "'opset' is not of type int"),
        (_bad_tolerance, r"tolerances: tolerance: agreement must be in \(0, 1\]"),
        (lambda m: {**m, "verification": {**m["verification"], "pairs": "many"}}, "verification: invalid literal"),
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
        "bad-verdict",
        "bad-opset",
        "bad-tolerance",
        "bad-settings",
    ],  # fmt: skip
)
def test_a_manifest_off_its_schema_is_refused(export_copy, change, message):
    _edit(export_copy, change)
    with pytest.raises(ExportError, match=message):
        ExportBundle.load(export_copy)


def test_the_untouched_manifest_loads(export_copy):
    assert set(ExportBundle.load(export_copy).variants) == {"fp32", "fused", "int8", "fp16"}


def test_the_manifest_reads_back_as_written(tiny_export, tmp_path):
    """One writer, one reader: loading and saving again gives the same file, byte for byte."""
    manifest = Manifest.load(tiny_export)
    assert manifest.variants["int8"].quantization and manifest.files["checkpoint/config.json"].size
    assert manifest.verification and manifest.verification.pairs == 200
    manifest.save(tmp_path)
    assert (tmp_path / "manifest.json").read_text() == (tiny_export / "manifest.json").read_text()


def test_a_hand_made_manifest_without_the_optional_fields_loads(export_copy):
    required = ("lucid_eval_version", "model_config", "variants", "files", "verdict")
    _edit(export_copy, lambda m: {k: v for k, v in m.items() if k in required})
    bundle = ExportBundle.load(export_copy)
    assert bundle.manifest.tolerances is None and bundle.manifest.seconds is None
    assert bundle.tolerances["int8"].agreement == 0.99  # the defaults, as before
    assert list(bundle.manifest.to_json()) == list(required[:2]) + ["variants", "verdict", "files"]
