"""Export never loses a user's files or a working export: it builds beside `--out`, moves into
place only when verified, refuses directories it did not write, replaces only with --force,
and lets one export at a time into a directory."""

import hashlib
import json

import pytest

from lucid_eval.export import ExportBundle, ExportConfig, ExportError, ExportVerificationError, export_model
from lucid_eval.locking import LockError, exclusive_lock


def _export(checkpoint, out, **kwargs):
    return export_model(ExportConfig(model=checkpoint, out=out, verify_pairs=16, **{"variants": ("fp32",), **kwargs}))


def _tree(path):
    """Every file under `path` with its hash: what must not change."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir() if p != path)


def test_a_directory_of_user_files_is_refused_and_untouched(tiny_checkpoint, tmp_path):
    d = tmp_path / "d"
    (d / "fp32").mkdir(parents=True)
    (d / "fp32" / "mine.txt").write_text("x")
    (d / "notes.txt").write_text("n")
    (d / "vocab.txt").write_text("my own vocabulary")
    before = _tree(d)
    with pytest.raises(
        ExportError, match=r"is not empty and is not a lucid-eval export \(it holds fp32, notes.txt, vocab.txt\)"
    ):
        _export(tiny_checkpoint, d, variants=("int8",))
    assert _tree(d) == before and _siblings(d) == []


def test_an_export_is_replaced_only_with_force_and_whole(tiny_checkpoint, tmp_path):
    out = tmp_path / "e"
    _export(tiny_checkpoint, out, variants=("fp32", "fused"))
    before = _tree(out)
    with pytest.raises(ExportError, match="already holds a lucid-eval export; pass --force"):
        _export(tiny_checkpoint, out)
    assert _tree(out) == before
    manifest = _export(tiny_checkpoint, out, force=True)
    assert list(manifest.variants) == ["fp32"] and not (out / "fused").exists()  # nothing stranded
    assert ExportBundle.load(out).variants == ["fp32"] and _siblings(out) == []


def test_a_failed_re_export_leaves_the_working_export_as_it_was(tiny_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "e"
    _export(tiny_checkpoint, out)
    before = _tree(out)
    import lucid_eval.export.pipeline as pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("the ONNX exporter broke halfway")

    monkeypatch.setattr(pipeline, "export_onnx", broken)
    with pytest.raises(RuntimeError, match="broke halfway"):
        _export(tiny_checkpoint, out, force=True)
    assert _tree(out) == before and _siblings(out) == []  # no staging directory, no lock left behind
    ExportBundle.load(out)


def test_a_disk_full_error_leaves_nothing_behind(tiny_checkpoint, tmp_path, monkeypatch):
    from lucid_eval.models.model import BERTForPreTraining

    def full(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(BERTForPreTraining, "save_pretrained", full)
    with pytest.raises(OSError, match="No space left"):
        _export(tiny_checkpoint, tmp_path / "e")
    assert list(tmp_path.iterdir()) == []


def test_failed_verification_keeps_out_unchanged_and_the_evidence_beside_it(
    tiny_checkpoint, tmp_path, perturbed_export
):
    with pytest.raises(ExportVerificationError, match=r"(?s)max \|Δ MLM logit\|.*e is unchanged; the failed export"):
        _export(tiny_checkpoint, tmp_path / "e")
    assert not (tmp_path / "e").exists()
    [kept] = tmp_path.glob("e.failed-*")
    assert json.loads((kept / "manifest.json").read_text())["verdict"] == "FAIL"


def test_one_export_at_a_time_per_directory(tiny_checkpoint, tmp_path):
    out = tmp_path / "e"
    with (
        exclusive_lock(tmp_path / ".e.lock", "test"),
        pytest.raises(LockError, match=r"an export into .*e is in use by process \d+"),
    ):
        _export(tiny_checkpoint, out)
    assert not out.exists()


def test_leftovers_of_a_killed_export_are_cleaned_under_the_lock(tiny_checkpoint, tmp_path):
    (tmp_path / ".e.tmp-abc123" / "fp32").mkdir(parents=True)
    (tmp_path / ".e.lock").write_text("999999\n")  # the lock file of a dead process
    _export(tiny_checkpoint, tmp_path / "e")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]


def test_out_that_is_a_file_is_refused(tiny_checkpoint, tmp_path):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(ExportError, match="is a file, not a directory"):
        _export(tiny_checkpoint, tmp_path / "f")
    assert (tmp_path / "f").read_text() == "mine"
