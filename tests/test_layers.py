"""The package's layers hold (docs/architecture.md): `lint-imports` keeps the contracts of pyproject.toml on
the real tree, breaks them on a copy with a deliberate upward import, and the package has no import circle."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "airflow_batchwork"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# The emulator's own circles, removed on the emulator branch of issue 16 (then this set is simply unused).
EMULATOR_PENDING = {
    frozenset({"airflow_batchwork.testing.faults", "airflow_batchwork.testing.store"}),
    frozenset({
        "airflow_batchwork.testing", "airflow_batchwork.testing.emulator", "airflow_batchwork.testing.providers",
        *(f"airflow_batchwork.testing.providers.{name}" for name in (
            "anthropic", "chat_tools", "gemini", "groq", "mistral", "openai", "together", "xai")),
    }),
}


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: install the test extra (pip install -e '.[test]')")
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=project, capture_output=True, text=True,
                          timeout=600)


def copy_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(ROOT / PACKAGE, project / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    return project


def add_import(project: Path, module: str, line: str) -> None:
    path = project / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{line}  # deliberate, for the test\n")


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (any import statement, also inside functions)."""
    modules: dict[str, Path] = {}
    for path in package_dir.rglob("*.py"):
        name = ".".join(path.relative_to(package_dir.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            edges[name].update(t for t in targets if t in modules and t != name)
    return {name: edges[name] for name in modules}


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_contracts_are_kept_on_the_tree() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract", "named"), [
    # A value importing the engine: upward across two layers.
    ("airflow_batchwork.values.status", "from airflow_batchwork.engine import client",
     "One-way layers", "airflow_batchwork.values.status -> airflow_batchwork.engine.client"),
    # The engine importing the Airflow layer.
    ("airflow_batchwork.engine.polling", "import airflow_batchwork.hooks.batchwork",
     "One-way layers", "airflow_batchwork.engine.polling -> airflow_batchwork.hooks.batchwork"),
    # Something inside the package importing the script facade.
    ("airflow_batchwork.operators.common", "from airflow_batchwork.core import BatchClient",
     "One-way layers", "airflow_batchwork.operators.common -> airflow_batchwork.core"),
    # One provider's adapter importing another's.
    ("airflow_batchwork.adapters.groq", "from airflow_batchwork.adapters.openai import OpenAIAdapter",
     "Each provider's adapter stands alone", "airflow_batchwork.adapters.groq -> airflow_batchwork.adapters.openai"),
    # The emulator importing the engine.
    ("airflow_batchwork.testing.echo", "import airflow_batchwork.engine.client",
     "The emulator (testing/)", "airflow_batchwork.testing.echo -> airflow_batchwork.engine.client"),
    # The two operator modules importing each other again.
    ("airflow_batchwork.operators.resubmit", "from airflow_batchwork.operators import batch",
     "No import circle", ".resubmit -> .batch"),
])
def test_an_upward_import_breaks_the_contract(tmp_path: Path, module: str, line: str, contract: str,
                                               named: str) -> None:
    project = copy_project(tmp_path)
    assert lint_imports(project).returncode == 0  # the copy itself is clean
    add_import(project, module, line)
    result = lint_imports(project)
    assert result.returncode != 0, result.stdout
    broken = result.stdout[result.stdout.index("Broken contracts"):]
    assert contract in broken
    assert named in broken


def test_no_import_circle_in_the_package() -> None:
    found = circles(import_graph(ROOT / PACKAGE))
    assert [sorted(c) for c in found if c not in EMULATOR_PENDING] == []


def test_the_circle_finder_finds_a_circle(tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    add_import(project, "airflow_batchwork.values.errors", "from airflow_batchwork.values.requests import BatchRequest")
    found = [c for c in circles(import_graph(project / PACKAGE)) if c not in EMULATOR_PENDING]
    assert found and any({"airflow_batchwork.values.errors", "airflow_batchwork.values.requests"} <= c for c in found)
