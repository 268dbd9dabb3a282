"""House rules that keep the code base honest: gradio stays in playground/ui, heavy imports stay lazy."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules_after_import(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_logic_packages_do_not_import_gradio():
    modules = _modules_after_import(
        "import playground.backends, playground.prompting, playground.finetune, playground.architectures, "
        "playground.backends.provider, playground.backends.compare, playground.backends.chat, playground.services"
    )
    assert "gradio" not in modules


def test_engines_import_torch_and_llama_cpp_lazily():
    modules = _modules_after_import("import playground.backends.provider, playground.config, playground.services")
    assert "torch" not in modules
    assert "llama_cpp" not in modules


# gradio itself (gradio, gradio.x); gradio_client is another package, a client of a running app (the load bench)
_GRADIO_IMPORT = re.compile(r"^\s*(?:import|from)\s+gradio(?:\.|\s|$)", re.MULTILINE)


def test_gradio_is_imported_only_under_playground_ui():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "playground").rglob("*.py")
                 if "ui" not in p.relative_to(ROOT / "playground").parts[:1]
                 and _GRADIO_IMPORT.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_the_gradio_import_rule_tells_gradio_from_its_client():
    assert _GRADIO_IMPORT.search("import gradio as gr") and _GRADIO_IMPORT.search("    from gradio.i18n import x")
    assert _GRADIO_IMPORT.search("import gradio\n")
    assert not _GRADIO_IMPORT.search("    from gradio_client import Client")
    assert not _GRADIO_IMPORT.search("import gradio_client")


def test_packages_whose_private_parts_the_code_uses_are_bounded_above():
    """A new llama-cpp-python release may rename what the engine reaches into: a fresh install takes the tested
    release, not whatever is newest."""
    import llama_cpp
    from packaging.requirements import Requirement

    requirements = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            requirements[requirement.name] = requirement
    private_users = {"llama-cpp-python": llama_cpp.__version__}
    for name, installed in private_users.items():
        specifier = requirements[name].specifier
        assert any(spec.operator in ("<", "<=", "==", "~=") for spec in specifier), name
        assert specifier.contains(installed), (name, installed, str(specifier))
    assert "_internals" in (ROOT / "playground" / "backends" / "llama_cpp_engine.py").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- no import circles


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, name: str, known: set[str]) -> list[tuple[str, int]]:
    """(playground module, line) of every import in the file, at any depth: module level, inside functions and
    classes, and under ``if TYPE_CHECKING:`` too (a loop of annotations is still a loop of dependencies)."""
    import ast

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import, resolved against the file's package
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # "from package import module" imports the module
                child = f"{base}.{alias.name}"
                found.append((child if child in known else base, node.lineno))
    return [(module, line) for module, line in found if module in known and module != name]


def _circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected parts of the import graph with more than one module (Tarjan), each as a loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    parts: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            part = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                part.append(member)
                if member == node:
                    break
            if len(part) > 1:
                parts.append(part)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_loop_through(graph, sorted(part)) for part in parts]


def _loop_through(graph: dict[str, dict[str, int]], part: list[str]) -> list[str]:
    """One closed path inside a strongly connected part, from its first module back to it (breadth first)."""
    start, members = part[0], set(part)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node]):
            if target == start:
                return paths[node] + [start]
            if target in members and target not in paths:
                paths[target] = paths[node] + [target]
                queue.append(target)
    return part


def test_no_import_circles_in_playground():
    """Every import in playground/ (function-level ones included) points one way: no module reaches itself."""
    files = {_module_name(p): p for p in sorted((ROOT / "playground").rglob("*.py"))}
    known = set(files)
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        graph[name] = {}
        for module, line in _imported_modules(path, name, known):
            graph[name].setdefault(module, line)
    report = []
    for loop in _circles(graph):
        steps = [f"{files[a].relative_to(ROOT)}:{graph[a][b]} imports {b}" for a, b in zip(loop, loop[1:])]
        report.append(" -> ".join(loop) + "\n    " + "\n    ".join(steps))
    assert not report, "import circles:\n" + "\n".join(report)


def test_the_circle_finder_finds_a_circle_through_a_function_level_import(tmp_path):
    module = tmp_path / "pkg" / "a.py"
    module.parent.mkdir()
    module.write_text("from pkg import b\n\n\ndef late():\n    from pkg.c import thing\n")
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c"}
    assert _imported_modules(module, "pkg.a", known) == [("pkg.b", 1), ("pkg.c", 5)]
    graph = {"pkg.a": {"pkg.b": 1, "pkg.c": 5}, "pkg.b": {}, "pkg.c": {"pkg.b": 1}, "pkg": {}}
    assert _circles(graph) == []
    graph["pkg.b"] = {"pkg.c": 2}
    graph["pkg.c"] = {"pkg.a": 3}
    assert _circles(graph) == [["pkg.a", "pkg.c", "pkg.a"]]  # the shortest way round
