"""The identity token's place in the page: a browser state that survives app restarts, and the client address."""

from __future__ import annotations

from types import SimpleNamespace

from playground.config import Settings
from playground.services import Services
from playground.ui.identity import IDENTITY_STORAGE_KEY, identity_state, request_address


def _services(data_dir, **environ) -> Services:
    return Services.create(Settings.load([], {"PLAYGROUND_DATA_DIR": str(data_dir), "PLAYGROUND_OFFLINE": "1",
                                              **environ}))


def test_the_browser_state_is_readable_after_a_restart_of_the_app(tmp_path):
    # Gradio encrypts a BrowserState with a random secret per start unless one is given; a restart would
    # otherwise cost every browser its identity and its runs.
    first, again = identity_state(_services(tmp_path)), identity_state(_services(tmp_path))
    assert first.storage_key == again.storage_key == IDENTITY_STORAGE_KEY
    assert first.secret == again.secret and len(first.secret) == 32
    other = identity_state(_services(tmp_path / "elsewhere"))
    assert other.secret != first.secret
    key = (tmp_path / "identity.key").read_bytes()
    assert first.secret not in (key.hex(), key.decode("latin-1"))  # made from the key, not the key


def test_the_request_address_honours_a_proxy_only_when_trusted(tmp_path):
    request = SimpleNamespace(client=SimpleNamespace(host="10.0.0.5"), headers={"x-forwarded-for": "1.2.3.4"})
    assert request_address(request, _services(tmp_path)) == "10.0.0.5"
    assert request_address(request, _services(tmp_path, PLAYGROUND_TRUST_PROXY="1")) == "1.2.3.4"
    assert request_address(None, _services(tmp_path)) == "unknown"
    assert request_address(SimpleNamespace(client=None, headers=None), _services(tmp_path)) == "unknown"


# ------------------------------------------------------------------ carrying one's runs to another browser


def _toast(action) -> str:
    import gradio as gr

    try:
        action()
    except gr.Error as exc:
        return exc.message
    raise AssertionError("no gr.Error")


def test_show_and_use_a_code_through_the_handlers_in_each_language(tmp_path):
    from playground.identity_codes import CodeGuessLimit
    from playground.ui.i18n import Texts
    from playground.ui.identity import on_show_code, on_use_code, refusal_text

    services = _services(tmp_path)
    try:
        alice, bob = services.identities.issuer.issue(), services.identities.issuer.issue()
        shown = on_show_code(services, Texts("pt"), alice, "10.0.0.1")
        assert "15 minutos" in shown and shown.startswith("## `")  # large, in a font that tells 0 from O
        code = shown.split("`")[1]
        token, box, status = on_use_code(services, Texts("fr"), code, bob, "10.0.0.2")
        assert services.identities.person(token).id == services.identities.person(alice).id
        assert box == "" and "Ce navigateur" in status
        assert _toast(lambda: on_use_code(services, Texts("pt"), code, bob, "10.0.0.2")).startswith(
            "Este código não pode ser usado")
        assert _toast(lambda: on_use_code(services, Texts("en"), "  ", bob, "10.0.0.2")).startswith("Paste the code")
        assert "identity token" in _toast(lambda: on_show_code(services, Texts("en"), "", "10.0.0.1"))
        assert refusal_text(CodeGuessLimit(61), Texts("fr"), 15) == ("Trop de codes erronés depuis ici. Réessayez "
                                                                      "dans 2 minutes.")
    finally:
        services.close()
