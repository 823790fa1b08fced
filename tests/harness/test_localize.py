"""`localize` on the tiny export: fp32 stays within 1e-4 everywhere, a perturbed layer is the first
boundary flagged, int8's error grows with depth, and nothing a user owns is overwritten. On
third-party graphs: a plain transformers export and its optimized form stay within 1e-4, a
fill-mask graph has no NSP boundaries, a graph of another depth maps no encoder boundary."""

import csv
import json
import math
import pydoc_data.topics
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lucid_eval.data.pairs import split_sentences
from lucid_eval.export.boundaries import instrument
from lucid_eval.export.graphs import export_onnx
from lucid_eval.files import sha256_file
from lucid_eval.harness.batching import iter_batches
from lucid_eval.harness.corpus import CorpusReader
from lucid_eval.harness.localize import (
    ErrorStats,
    LocalizeConfig,
    LocalizeError,
    budget,
    localize,
    measure,
    runtime_table,
)
from lucid_eval.harness.localize_select import OUT_FOLDER, flipped_examples
from lucid_eval.harness.masking import encode_chunk
from lucid_eval.harness.run_info import CorpusInfo, Counts, RunInfo
from lucid_eval.models.model import BERTForPreTraining
from lucid_eval.reports.localize import RUN_FOLDER, build_localize_report
from lucid_eval.tolerances import tolerance_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from foreign_graphs import hf_masked_lm_graph, hf_pretraining_graph, ort_optimized  # noqa: E402

N = 24


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    sents = [s for v in list(pydoc_data.topics.topics.values())[:6] for s in split_sentences(v) if 20 < len(s) < 300]
    path = tmp_path_factory.mktemp("corpus") / "pairs.tsv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t")
        writer.writerow(["id", "text_a", "text_b", "nsp_label"])
        writer.writerows([f"p{i}", sents[i], sents[i + 1] if i % 2 else sents[-i - 1], i % 2] for i in range(40))
    return path


def run(tiny_export, corpus, out, **overrides):
    config = LocalizeConfig(
        export_dir=tiny_export, corpus=corpus, out_dir=out, threads=1, **{"n_pairs": N, **overrides}
    )
    return localize(config, report=build_localize_report)


def test_fp32_every_boundary_within_1e4(tiny_export, corpus, tmp_path):
    result = run(tiny_export, corpus, tmp_path / "out", runtimes=["ort-cpu-plain", "ort-cpu"])
    table = result.table
    assert len(table) == 2 * 9 and (table["tensor"] != "").all()
    assert (table["max_abs"] <= 1e-4).all(), table[["runtime", "boundary", "max_abs"]]
    assert (table["cosine"] > 1 - 1e-6).all() and not table["flagged"].any()
    assert all(s.first_flagged is None and "no boundary over its share" in s.text for s in result.summaries)
    written = pd.read_csv(tmp_path / "out" / "localize.csv")
    expected = {"runtime", "boundary", "layer", "depth", "how_found", "max_abs", "rel_err", "cosine", "flagged"}
    assert expected <= set(written.columns) and len(written) == len(table)
    info = json.loads((tmp_path / "out" / "localize.json").read_text())
    assert info["pairs"] == N and info["seed"] == 0 and "linearly with depth" in info["rule"]
    assert (tmp_path / "out" / "localize.html").read_text().count("data:image/png;base64,") == 1


@pytest.fixture(scope="module")
def inputs(tiny_export, corpus):
    from lucid_eval.export import ExportBundle

    bundle = ExportBundle.load(tiny_export)
    records = list(CorpusReader(corpus))[:N]
    examples = encode_chunk(records, bundle.tokenizer, seed=0, max_length=128, mlm_probability=0.15)
    batches = [b for _, b in iter_batches(examples, token_budget=512, max_batch=16, max_length=128, pad_token_id=0)]
    return BERTForPreTraining.from_pretrained(bundle.checkpoint), batches


@pytest.mark.parametrize(
    "parameter, first",
    [
        ("bert.encoder.layer.1.intermediate.dense.weight", "bert.encoder.layer.1"),
        ("bert.encoder.layer.0.attention.output.dense.weight", "bert.encoder.layer.0.attention"),
    ],
)
def test_a_perturbed_layer_is_the_first_boundary_flagged(inputs, tmp_path, parameter, first):
    reference, batches = inputs
    perturbed = BERTForPreTraining(reference.config)
    perturbed.load_state_dict(reference.state_dict())
    with torch.no_grad():
        weight = perturbed.get_parameter(parameter)
        weight.add_(0.1 * weight.std() * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    export_onnx(perturbed, tmp_path / "full.onnx", tmp_path / "scoring.onnx", opset=17)
    graph = instrument(tmp_path / "full.onnx", reference.config.num_hidden_layers)
    stats = measure(reference, {"perturbed": graph}, batches)
    table = runtime_table("perturbed", graph.boundaries, stats, budget(tolerance_for("fp32"))[0])
    flagged = table[table["flagged"]].sort_values("depth", kind="stable")
    assert flagged.iloc[0]["boundary"] == first, table[["boundary", "rel_err", "share"]]
    before = table[table["depth"] < flagged.iloc[0]["depth"]]
    assert (before["max_abs"] <= 1e-4).all() and not before["flagged"].any()


def test_int8_errors_are_reported_per_layer_and_grow_with_depth(tiny_export, corpus, tmp_path):
    table = run(tiny_export, corpus, tmp_path / "out", runtimes=["ort-cpu-int8"]).table.set_index("boundary")
    path = ["bert.embeddings", "bert.encoder.layer.0.attention", "bert.encoder.layer.0", "bert.encoder.layer.1"]
    errors = table.loc[path, "rel_err"].to_numpy()
    assert np.all(np.diff(errors) > 0), errors
    assert errors[0] < 1e-5 < errors[1]  # the embeddings stay fp32; the first quantized MatMuls are in layer 0
    html = (tmp_path / "out" / "localize.html").read_text()
    assert "ort-cpu-int8" in html and "bert.encoder.layer.1.attention" in html


def test_fp16_graph_values_are_cast_before_comparing(inputs, tiny_export):
    reference, batches = inputs
    graph = instrument(tiny_export / "fp16" / "full.onnx", 2)  # the CUDA graph, run on the CPU EP here
    stats = measure(reference, {"fp16": graph}, batches[:1])
    table = runtime_table("fp16", graph.boundaries, stats, budget(tolerance_for("fp16"))[0])
    assert (table["rel_err"] < 1e-2).all() and (table["cosine"] > 0.999).all()


def save_run_info(run_dir: Path, corpus: Path, **fields) -> RunInfo:
    """A score run's run.json in `run_dir`, with `fields` set (the rest: a plain run of `corpus`)."""
    info = RunInfo(**{
        "seed": 0, "max_length": 128, "corpus": CorpusInfo(path=str(corpus), sha256=sha256_file(corpus)),
        "reference": "torch-cpu",
        "runtimes": ["torch-cpu", "ort-cpu-int8"], "counts": Counts(read=40, scored=40, rejected=0),
        "versions": {"lucid_eval": "0.1.0"}, "started": "2026-01-02T03:04:05Z", "finished": "2026-01-02T03:04:09Z",
        **fields,
    })  # fmt: skip
    info.save(run_dir)
    return info


def test_flipped_examples_localise_with_the_runs_settings(tiny_export, corpus, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    pd.DataFrame({"runtime": ["ort-cpu-int8"] * 3, "id": ["p7", "p3", "p7"]}).to_csv(run_dir / "flips.csv", index=False)
    save_run_info(run_dir, corpus, seed=5, max_length=64, mlm_probability=0.15)
    result = run(tiny_export, corpus, tmp_path / "out", runtimes=["ort-cpu"], examples_from=run_dir, n_pairs=None)
    assert result.info["examples"] == ["p7", "p3"] and result.info["pairs"] == 2
    assert (result.info["seed"], result.info["max_length"]) == (5, 64)
    with pytest.raises(LocalizeError, match="1 of 2 ids are not in"):
        run(tiny_export, corpus, tmp_path / "other", runtimes=["ort-cpu"], examples=("p1", "nope"), n_pairs=None)
    assert not (tmp_path / "other").exists()


def test_a_run_json_that_is_not_a_runs_is_refused_not_guessed_around(tmp_path):
    """Its seed and corpus would otherwise silently become the defaults: other masks, other pairs."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    pd.DataFrame({"runtime": ["ort-cpu-int8"], "id": ["p7"]}).to_csv(run_dir / "flips.csv", index=False)
    assert flipped_examples(run_dir).run is None  # no run.json: nothing recorded, nothing refused
    (run_dir / "run.json").write_text(json.dumps({"seed": 5, "max_length": 64}))
    with pytest.raises(LocalizeError, match="is not a lucid-eval run.json"):
        flipped_examples(run_dir / "flips.csv")


def test_refuses_a_directory_it_did_not_write(tiny_export, corpus, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(LocalizeError, match="is not empty"):
        run(tiny_export, corpus, out, runtimes=["ort-cpu"], n_pairs=2)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    first = tmp_path / "again"
    run(tiny_export, corpus, first, runtimes=["ort-cpu"], n_pairs=2)
    run(tiny_export, corpus, first, runtimes=["ort-cpu"], n_pairs=3)  # an earlier localize output is replaced
    assert json.loads((first / "localize.json").read_text())["pairs"] == 3
    with pytest.raises(LocalizeError, match="torch-cpu reference"):
        run(tiny_export, corpus, tmp_path / "torch", runtimes=["torch-cpu"])


def test_error_stats():
    stats = ErrorStats()
    ref = np.array([[3.0, 4.0], [0.0, 0.0]])
    stats.add(ref, ref + np.array([[0.0, 0.5], [0.0, 0.0]]))
    assert stats.max_abs == 0.5 and math.isclose(stats.rel_err, 0.1) and stats.positions == 2
    assert 0.99 < stats.cosine < 1.0  # the zero row agrees exactly: cosine 1
    stats.add(ref, np.full_like(ref, np.nan))
    assert math.isnan(stats.max_abs) and math.isnan(stats.rel_err)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, tiny_checkpoint, tiny_config) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("foreign")
    for folder in ("hf", "opt", "mlm"):
        (root / folder).mkdir()
    plain = hf_pretraining_graph(tiny_checkpoint, root / "hf" / "model.onnx")
    heads, hidden = tiny_config.num_attention_heads, tiny_config.hidden_size
    return {
        "plain": plain,
        "optimized": ort_optimized(plain, root / "opt" / "model.onnx", heads, hidden),
        "masked_lm": hf_masked_lm_graph(tiny_checkpoint, root / "mlm" / "fill-mask.onnx"),
    }


FOREIGN = {"plain": "ort-cpu:hf/model", "optimized": "ort-cpu:opt/model", "masked_lm": "ort-cpu:fill-mask"}


def test_foreign_graphs_stay_within_1e4_and_are_only_read(tiny_checkpoint, graphs, corpus, tmp_path):
    before = {kind: sha256_file(path) for kind, path in graphs.items()}
    listing = sorted(p for path in graphs.values() for p in path.parent.iterdir())
    config = LocalizeConfig(model=tiny_checkpoint, onnx=tuple(graphs.values()), corpus=corpus, out_dir=tmp_path / "out",
                            threads=1, n_pairs=N)  # fmt: skip
    result = localize(config, report=build_localize_report)
    table = result.table
    assert list(dict.fromkeys(table["runtime"])) == list(FOREIGN.values())
    mapped = table[table["status"] == "mapped"]
    assert len(mapped) == 9 + 9 + 7 and (mapped["max_abs"] <= 1e-4).all(), table[["runtime", "boundary", "max_abs"]]
    assert (mapped["cosine"] > 1 - 1e-6).all() and not table["flagged"].any()
    absent = table[table["status"] == "absent"]
    assert sorted(zip(absent["runtime"], absent["boundary"], strict=True)) == [
        ("ort-cpu:fill-mask", "bert.pooler"),
        ("ort-cpu:fill-mask", "cls.seq_relationship"),
    ]
    fill = result.summaries[2]
    assert (fill.variant, fill.export_verdict, fill.unmapped) == ("foreign", None, [])
    assert fill.text.startswith("ort-cpu:fill-mask (fp32, foreign graph, budget 0.0001 = logit tolerance)")
    assert "no NSP head in this graph: bert.pooler, cls.seq_relationship not compared" in fill.text
    info = json.loads((tmp_path / "out" / "localize.json").read_text())
    assert info["export"] is None and info["checkpoint"]["path"] == str(tiny_checkpoint.resolve())
    for kind, name in FOREIGN.items():
        record = info["onnx_graphs"][name]
        assert (record["path"], record["sha256"]) == (str(graphs[kind].resolve()), before[kind])
    assert info["onnx_graphs"]["ort-cpu:fill-mask"]["nsp_output"] is None
    assert {kind: sha256_file(path) for kind, path in graphs.items()} == before
    assert sorted(p for path in graphs.values() for p in path.parent.iterdir()) == listing
    html = (tmp_path / "out" / "localize.html").read_text()
    assert "Checkpoint <code><bdi>" in html and "no NSP head" in html and ">absent</td>" in html


def test_a_graph_of_another_depth_maps_no_encoder_boundary(tiny_checkpoint, corpus, tmp_path):
    shallow = tmp_path / "one-layer"
    shutil.copytree(tiny_checkpoint, shallow)
    config = json.loads((shallow / "config.json").read_text())
    (shallow / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}))
    graph = hf_pretraining_graph(shallow, tmp_path / "one-layer.onnx")
    config = LocalizeConfig(model=tiny_checkpoint, onnx=(graph,), corpus=corpus, out_dir=tmp_path / "out", threads=1,
                            n_pairs=4)  # fmt: skip
    result = localize(config)
    table = result.table.set_index("boundary")
    encoder = table[table["branch"] == "trunk"]
    assert (encoder["status"] == "not mapped").all() and encoder["rel_err"].isna().all()
    assert (
        "not mapped: 3 normalization nodes (LayerNormalization) besides the MLM transform's, expected "
        "1 + 2 x 2 layers = 5" in encoder["how_found"].iloc[0]
    )
    assert table.loc["cls.predictions", "status"] == "mapped" and table.loc["cls.predictions", "flagged"]
    assert "NOT MAPPED: bert.embeddings, bert.encoder.layer.0.attention" in result.summaries[0].text


def test_examples_from_a_run_take_its_corpus_model_graphs_and_folder(tiny_checkpoint, graphs, corpus, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    flips = pd.DataFrame({"runtime": ["ort-cpu:fill-mask"] * 3, "kind": "mlm", "id": ["p9", "p4", "p9"]})
    flips.to_csv(run_dir / "flips.csv", index=False)
    records = {name: {"path": str(graphs[kind].resolve()), "sha256": sha256_file(graphs[kind])}
               for kind, name in FOREIGN.items()}  # fmt: skip
    run = save_run_info(run_dir, corpus, seed=3, max_length=64, onnx_graphs=records,
                        checkpoint={"path": str(tiny_checkpoint), "sha256": "0" * 64})  # fmt: skip
    lines = []
    result = localize(LocalizeConfig(examples_from=run_dir, threads=1), echo=lines.append)
    assert result.out_dir == run_dir / OUT_FOLDER and OUT_FOLDER == RUN_FOLDER  # where the run's report looks
    assert result.run_dir == run_dir
    assert (run_dir / "localize" / "localize.csv").is_file()
    assert list(dict.fromkeys(result.table["runtime"])) == ["ort-cpu:fill-mask"]  # only the graph that flipped
    assert result.info["examples"] == ["p9", "p4"] and (result.info["seed"], result.info["max_length"]) == (3, 64)
    assert result.info["run"] == {"dir": str(run_dir), "started": "2026-01-02T03:04:05Z"}
    assert any(line.startswith(f"warning: checkpoint {tiny_checkpoint} is not what that run scored") for line in lines)
    elsewhere = localize(LocalizeConfig(examples_from=run_dir, out_dir=tmp_path / "elsewhere", threads=1))
    assert elsewhere.run_dir is None  # not the run's folder: its report is left alone
    with pytest.raises(LocalizeError, match="give --corpus FILE"):
        replace(run, corpus=CorpusInfo(path=str(tmp_path / "gone.tsv"))).save(run_dir)
        localize(LocalizeConfig(examples_from=run_dir, threads=1))
