"""The test suite's own rules: test modules share helpers through tests/helpers/ and fixtures, never
by importing one another, and the unit lane starts no process and trains no shared project."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
PROCESS_MODULES = {"subprocess", "multiprocessing"}
# a process started, or the session's trained project (eight epochs) asked for
FORBIDDEN_NAMES = {"Popen", "ProcessPoolExecutor", "trained_project"}


def imported_modules(path: Path) -> set[str]:
    """The modules `path` imports (relative imports spelled with their leading dots)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add("." * node.level + (node.module or ""))
    return modules


def test_no_test_module_imports_another_test_module():
    offenders = {
        f"{path.relative_to(TESTS)}: {module}"
        for path in TESTS.rglob("*.py")
        for module in imported_modules(path)
        if module.startswith(".")
        or module.split(".")[-1].startswith(("test_", "conftest"))
        or (module.startswith("tests.") and not module.startswith("tests.helpers"))
    }
    assert offenders == set(), "shared helpers belong in tests/helpers/ or a conftest fixture"


def test_unit_tests_start_no_process_and_train_no_shared_project():
    offenders = set()
    for path in (TESTS / "unit").glob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        names |= {a.arg for node in ast.walk(tree) if isinstance(node, ast.arguments) for a in node.args}
        started = {module.split(".")[0] for module in imported_modules(path)} & PROCESS_MODULES
        offenders |= {f"{path.name}: {name}" for name in started | (names & FORBIDDEN_NAMES)}
    assert offenders == set(), "tests that start processes or train belong in tests/integration"
