"""House rules that keep the code base honest: gradio stays in playground/ui, heavy imports stay lazy."""

from __future__ import annotations

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


def test_gradio_is_imported_only_under_playground_ui():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "playground").rglob("*.py")
                 if "ui" not in p.relative_to(ROOT / "playground").parts[:1]
                 and ("import gradio" in p.read_text(encoding="utf-8")
                      or "from gradio" in p.read_text(encoding="utf-8"))]
    assert offenders == []


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
