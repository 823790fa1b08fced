"""`lucid-eval pairs` turns documents into a TSV the corpus reader accepts."""

from click.testing import CliRunner

from lucid_eval.cli import main
from lucid_eval.harness.corpus import CorpusReader

DOCS = """= Cats =
Cats are small carnivorous mammals. They were domesticated long ago. Many people keep them as pets.
They sleep for most of the day.

= Rivers =
A river is a natural stream of water. It flows toward an ocean or a lake. Rivers shape valleys over time.
Some rivers dry up in summer.
"""


def test_pairs_command(tmp_path):
    (tmp_path / "docs.txt").write_text(DOCS)
    out = tmp_path / "pairs.tsv"
    result = CliRunner().invoke(main, ["pairs", str(tmp_path / "docs.txt"), "--out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    records = list(CorpusReader(out))
    assert result.output.strip() == f"wrote {len(records)} pairs to {out}"
    assert {r.nsp_label for r in records} <= {0, 1} and len(records) == 6


def test_pairs_command_with_too_little_text(tmp_path):
    (tmp_path / "docs.txt").write_text("One sentence only.\n")
    result = CliRunner().invoke(main, ["pairs", str(tmp_path / "docs.txt"), "--out", str(tmp_path / "p.tsv")])
    assert result.exit_code == 1 and "Error:" in result.output


def test_pairs_never_replaces_a_file_without_force(tmp_path):
    (tmp_path / "docs.txt").write_text(DOCS)
    out = tmp_path / "mine.tsv"
    out.write_text("a user's file\n")
    args = ["pairs", str(tmp_path / "docs.txt"), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "already exists; pass --force" in result.output
    assert out.read_text() == "a user's file\n"
    assert CliRunner().invoke(main, [*args, "--force"]).exit_code == 0 and len(list(CorpusReader(out))) == 6
