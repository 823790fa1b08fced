"""The `lucid-eval` command line: each command is a thin call into the library."""

import click

from lucid_eval import __version__


@click.group()
@click.version_option(__version__, prog_name="lucid-eval")
def main() -> None:
    """Prove an exported BERT pretraining model is the same model on every runtime."""
