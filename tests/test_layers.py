"""The package's layers, lowest first; a module may import its own layer and those below, never above.

core (verdict, tolerances, errors, files, locking, isolated, totals, lazy) -> models -> data -> train -> export ->
runtimes -> harness -> reports -> app (cli, demo, bench). Function-local imports count too."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lucid_eval

ORDER = ("core", "models", "data", "train", "export", "runtimes", "harness", "reports", "app")
CORE = {"verdict", "tolerances", "errors", "files", "locking", "isolated", "totals", "lazy"}
APP = {"cli", "demo", "bench"}
PACKAGE = Path(lucid_eval.__file__).parent


def layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "lucid_eval":
        return None
    if len(parts) == 1 or parts[1] in CORE:
        return "core"
    return "app" if parts[1] in APP else parts[1]


def _submodule(name: str) -> bool:
    return (PACKAGE / name / "__init__.py").exists() or (PACKAGE / f"{name}.py").exists()


def imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "lucid_eval":  # from lucid_eval import cli
            found += [(node.lineno, f"lucid_eval.{a.name}") for a in node.names if _submodule(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return found


def test_every_package_is_a_known_layer():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert packages | modules <= set(ORDER) | CORE | APP, (packages | modules) - (set(ORDER) | CORE | APP)


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        mine = ORDER.index(layer(module))
        for line, name in imports(ast.parse(path.read_text(encoding="utf-8"))):
            other = layer(name)
            if other and ORDER.index(other) > mine:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({layer(module)}) imports {name} ({other})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


@pytest.mark.parametrize(
    "module",
    [
        "lucid_eval.export.transforms",  # every export runs it in child processes: torch would cost seconds each
        "lucid_eval.export.manifest",  # read by reports and the harness to describe an export
        "lucid_eval.harness.corpus",  # the corpus reader, also used where no model runs
    ],
)
def test_light_modules_do_not_load_torch(module: str) -> None:
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'importing {module} loaded torch'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
