"""The shape of the package: no import cycle, C reached only through the
seam, benchmarks outside the wheel's package, nothing citing files outside
the repository.  Static: reads the sources, imports nothing."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "loopcore"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, target: str) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _imports(path: Path) -> Iterator[Tuple[str, List[str]]]:
    """(module, names) for each import of a loopcore module, wherever it
    stands: at the top, or inside a function (a lazy import is still an
    edge: it runs the other module, which may import this one back).
    Only imports under ``if TYPE_CHECKING:`` are left out; they never run."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(sub) for child in node.body for sub in ast.walk(child))
    for sub in ast.walk(tree):
        if id(sub) in skipped:
            continue
        if isinstance(sub, ast.ImportFrom) and sub.level:
            yield (_resolve(_module_name(path), path.name == "__init__.py", sub.level,
                            sub.module or ""), [a.name for a in sub.names])
        elif isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("loopcore"):
            yield sub.module or "", [a.name for a in sub.names]
        elif isinstance(sub, ast.Import):
            for alias in sub.names:
                if alias.name.startswith("loopcore"):
                    yield alias.name, []


def import_graph() -> Dict[str, Set[str]]:
    """loopcore module -> the loopcore modules it imports, at import time or later."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, names in _imports(path):
            # "from . import x" imports the submodule x
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            for dep in subs or ([target] if target in modules else []):
                if dep != name:
                    graph[name].add(dep)
    return graph


def _cycle(graph: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_no_import_cycle():
    graph = import_graph()
    # a package's __init__ re-exports its modules: that edge is not a cycle
    # when the modules never import the package back, which the search sees
    assert not _cycle(graph), " -> ".join(_cycle(graph))


def test_c_is_reached_only_through_the_seam():
    offenders = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
                 if p.name not in ("_c.py", "_build.py")
                 and re.search(r"^\s*from\s+\.+_native\s+import\s+(?!CData)", p.read_text(), re.M)]
    assert not offenders, f"import the C library through loopcore._c: {offenders}"


def test_benchmarks_are_not_in_the_package():
    assert not (PACKAGE / "bench").exists()
    assert (ROOT / "benchmarks" / "__main__.py").exists()


def test_nothing_cites_files_outside_the_repository():
    pattern = re.compile(r"REFERENCE\.md|ULOG-NOTES|STYLE\.md|shared/seeds|\.\./shared")
    sources = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in
               (".py", ".c", ".h", ".md", ".toml", ".in", "") and ".venv" not in p.parts
               and ".git" not in p.parts and "build" not in p.parts
               and p != Path(__file__).resolve()]
    offenders = []
    for path in sources:
        try:
            if pattern.search(path.read_text(errors="replace")):
                offenders.append(str(path.relative_to(ROOT)))
        except OSError:
            continue
    assert not offenders, offenders


def test_the_cycle_check_can_fail():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert not _cycle({"a": {"b"}, "b": set()})
