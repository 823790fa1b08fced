"""The modules of `lucid_eval.models` import each other one way only: no cycles, lazy imports included."""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import lucid_eval.models

PACKAGE = Path(lucid_eval.models.__file__).parent


def test_models_modules_have_no_import_cycles() -> None:
    graph = {}
    for path in PACKAGE.glob("*.py"):
        if path.stem == "__init__":
            continue
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lucid_eval.models."):
                found.add(node.module.rsplit(".", 1)[1])
        graph[path.stem] = found
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle in lucid_eval.models: {exc.args[1]}") from None
