"""`lucid-eval bench` produces every field on a tiny model (speed itself is not asserted)."""

import csv
import json
import pydoc_data.topics

import pandas as pd
import pytest
from click.testing import CliRunner

from lucid_eval.cli import main
from lucid_eval.data.pairs import split_sentences


@pytest.mark.slow
def test_bench_end_to_end(tiny_checkpoint, tmp_path):
    sentences = [s for v in list(pydoc_data.topics.topics.values())[:5] for s in split_sentences(v) if len(s) > 30]
    corpus = tmp_path / "pairs.tsv"
    with open(corpus, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t")
        writer.writerow(["id", "text_a", "text_b", "nsp_label"])
        for i in range(40):
            writer.writerow([i, sentences[i], sentences[i + 1] if i % 2 == 0 else sentences[-i], i % 2])
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        main, ["bench", "--model", str(tiny_checkpoint), "--corpus", str(corpus), "--out", str(out), "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "bench.csv")
    assert list(table["name"]) == ["baseline", "optimum", "torch-cpu", "ort-cpu", "ort-cpu-int8", "ort-cpu-int8-static"]
    peer, table = table[table["name"] == "optimum"].iloc[0], table[table["name"] != "optimum"]
    if peer["implementation"].startswith("not installed"):  # the optimum extra lives in its own venv
        assert pd.isna(peer["pairs_per_second"]) and table["vs_optimum"].isna().all()
    else:
        assert abs(peer["mlm_loss"] - table["mlm_loss"].iloc[0]) <= 1e-4 and pd.isna(peer["nsp_accuracy"])
    for column in ("pairs_per_second", "tokens_per_second", "speedup", "mlm_loss", "mlm_accuracy", "nsp_loss",
                   "nsp_accuracy", "useful_gflops", "roofline", "peak_rss_mb", "d_mlm_loss"):  # fmt: skip
        assert table[column].notna().all(), column
    assert (table["pairs"] == 40).all() and table["masked_tokens"].nunique() == 1, "same masks everywhere"
    fp32 = table[table["precision"] == "fp32"]
    assert fp32["d_mlm_loss"].abs().max() <= 1e-4 and fp32["d_nsp_loss"].abs().max() <= 1e-4
    info = json.loads((out / "bench.json").read_text())
    assert info["matmul_gflops"] > 0 and info["model_mb"] > 0
    assert info["batches"] == {"token_budget": 2048, "max_batch": 16}  # every runtime on the CPU
    assert "batches of at most 2048 tokens / 16 pairs" in (out / "bench.md").read_text()
    overhead = info["suite_overhead"]  # score + report on 1000 pairs: the harness's time per model second
    assert overhead["pairs"] == 1000 and overhead["model_s"] > 0 and overhead["share"] > 0
    assert "Suite overhead" in (out / "bench.md").read_text()
    profiles = info["ort_profiles_s"]  # ONNX Runtime's profiler on each ONNX Runtime CPU graph
    assert list(profiles) == ["ort-cpu", "ort-cpu-int8", "ort-cpu-int8-static"]
    assert {"Attention", "MatMul"} <= set(profiles["ort-cpu"]) and min(profiles["ort-cpu"].values()) >= 0
    assert "QAttention" in profiles["ort-cpu-int8"] and "QLinearMatMul" in profiles["ort-cpu-int8-static"]
    assert "ort-cpu-int8-static's time by operator" in (out / "bench.md").read_text()
    gemms = info["ort_cpu_gemms"]  # the fused graph's GEMM operators against its profile
    assert gemms["MatMul_gflops"] > 0 and gemms["Attention_gflops"] > 0 and 0 < gemms["gemm_share"] < 1
    assert gemms["padding"] >= 1 and "padded tokens per real token" in (out / "bench.md").read_text()
    assert "data:image/png;base64," in (out / "bench.html").read_text()


def test_bench_passes_batch_shape_to_its_config(tmp_path, monkeypatch):
    """--token-budget and --max-batch reach the measurement config (the bench itself is faked)."""
    import lucid_eval.bench as bench

    seen = {}

    def fake(config, echo):
        seen["config"] = config
        columns = ["name", "pairs_per_second", "speedup", "vs_optimum", "mlm_loss", "mlm_accuracy", "nsp_accuracy",
                   "roofline", "peak_rss_mb"]  # fmt: skip
        return pd.DataFrame(columns=columns)

    monkeypatch.setattr(bench, "run_bench", fake)
    corpus = tmp_path / "pairs.tsv"
    corpus.write_text("text_a\ttext_b\na\tb\n")
    args = ["bench", "--model", "demo", "--corpus", str(corpus), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(main, [*args, "--token-budget", "4096", "--max-batch", "32"])
    assert result.exit_code == 0, result.output
    assert (seen["config"].token_budget, seen["config"].max_batch) == (4096, 32)
    result = CliRunner().invoke(main, args)  # unset: run_bench picks the runtimes' default shape
    assert result.exit_code == 0, result.output
    assert (seen["config"].token_budget, seen["config"].max_batch) == (None, None)


def test_profile_lines_name_each_runtime_and_read_older_bench_json():
    from lucid_eval.reports.bench import profile_line, profiles

    profile = {"QAttention": 3.0, "MatMul": 1.0, "Cast": 0.001}
    assert profile_line("ort-cpu-int8", profile) == (
        "ort-cpu-int8's time by operator (ONNX Runtime profiler, 4.00 s): QAttention 75.0%, MatMul 25.0%."
    )
    assert profiles({"ort_profiles_s": {"ort-cpu-int8": profile}}) == {"ort-cpu-int8": profile}
    assert profiles({"ort_cpu_profile_s": profile}) == {"ort-cpu": profile}  # written before int8 was profiled
    assert profiles({}) == {}


def test_gemm_flops_count_each_operator_over_padded_batches():
    from lucid_eval.bench.flops import gemm_flops
    from lucid_eval.models.config import BERTConfig

    config = BERTConfig(vocab_size=10, hidden_size=4, num_hidden_layers=2, num_attention_heads=2, intermediate_size=8)
    work = gemm_flops(config, [(2, 3, 1), (1, 5, 2)])  # 6 + 5 rows; 2 + 2 masked slots
    C, F, V, L = 4, 8, 10, 2
    assert work["MatMul"] == L * 11 * (2 * C * C + 4 * C * F) + 4 * (2 * C * C + 2 * C * V)
    assert work["Attention"] == L * (11 * 6 * C * C + 4 * C * (2 * 9 + 1 * 25))


def test_gemm_rates_need_a_fused_profile_and_their_line_names_them():
    from lucid_eval.bench import _gemm_rates
    from lucid_eval.reports.bench import gemm_line

    assert _gemm_rates(None, None, {"QAttention": 1.0}, 10) == {}  # an unfused or int8 profile: nothing to say
    info = {"matmul_gflops": 344.4, "ort_cpu_gemms": {"MatMul_gflops": 316.2, "Attention_gflops": 253.0,
                                                      "gemm_share": 0.89, "padding": 1.154}}  # fmt: skip
    assert gemm_line(info) == (
        "ort-cpu's GEMM operators over its padded batches: MatMul 316 GFLOP/s, Attention 253 GFLOP/s "
        "(matmul rate 344), 89.0% of its time; 1.154 padded tokens per real token."
    )


def test_bench_never_overwrites_earlier_results_or_an_export_without_force(tiny_checkpoint, tmp_path, monkeypatch):
    """An earlier bench's files stay untouched unless --force, and nothing is measured first; an
    export in OUT that does not fit this bench is replaced only with --force."""
    import lucid_eval.bench as bench
    import lucid_eval.export as export

    corpus = tmp_path / "pairs.tsv"
    corpus.write_text("text_a\ttext_b\na\tb\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "bench.json").write_text("earlier")
    exported = []
    monkeypatch.setattr(export, "export_model", lambda config: exported.append(config) or 1 / 0)
    args = ["bench", "--model", str(tiny_checkpoint), "--corpus", str(corpus), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert (
        result.exit_code == 1 and "holds an earlier bench (bench.json)" in result.output and "--force" in result.output
    )
    assert (
        (out / "bench.json").read_text() == "earlier" and not exported and sorted(out.iterdir()) == [out / "bench.json"]
    )

    (out / "bench.json").unlink()
    stale = out / f"export-{tiny_checkpoint.name}"
    stale.mkdir()
    (stale / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and f"{stale} is not a usable export" in result.output, result.output
    assert (stale / "notes.txt").read_text() == "mine" and not exported

    config = bench.BenchConfig(model=str(tiny_checkpoint), corpus=corpus, out=out, force=True)
    with pytest.raises(ZeroDivisionError):  # the fake export: reached only with force
        bench.prepare_export(config)
    assert exported and exported[0].out == stale and exported[0].force
