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
