"""The README documents what the code does: every setting, the Spaces header, the two commands."""

from __future__ import annotations

from pathlib import Path

from playground.config import settings_table_markdown

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_lists_every_setting():
    assert settings_table_markdown() in README


def test_readme_starts_with_spaces_front_matter():
    header = README.split("---")[1]
    assert "sdk: gradio" in header and "app_file: app.py" in header


def test_ci_runs_the_readme_test_command():
    assert "bash scripts/test.sh" in README
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -r requirements.txt && python app.py" in README
