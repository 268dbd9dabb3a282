"""The browser's identity token in the UI: issued when a page opens, checked on every call that needs it.

The token lives in the browser's local storage (one ``gr.BrowserState`` made by
the app builder and passed to the tabs); the logic that signs, checks and
rate-limits is :mod:`playground.identity`. A script gets a token from the
``/identity`` endpoint and passes it as the ``identity`` argument of the
endpoints that take one.
"""

from __future__ import annotations

import gradio as gr

from playground.identity import Identity, client_address
from playground.services import Services
from playground.ui.widgets import user_errors

IDENTITY_STORAGE_KEY = "playground-identity"


def request_address(request: gr.Request | None, services: Services) -> str:
    """Where a request came from (behind a trusted proxy: the address the proxy saw)."""
    if request is None:
        return "unknown"
    client = getattr(request, "client", None)
    peer = getattr(client, "host", None) if client is not None else None
    headers = getattr(request, "headers", None) or {}
    return client_address(peer, headers.get("x-forwarded-for"), services.settings.trust_proxy)


def identity_state(services: Services) -> gr.BrowserState:
    """The component that keeps the token in this browser (one per app).

    Gradio encrypts a BrowserState's value with a secret that is random for each start unless given; one
    made from the signing key keeps a browser's identity (and its runs) across restarts of the app.
    """
    return gr.BrowserState("", storage_key=IDENTITY_STORAGE_KEY,
                           secret=services.identities.issuer.derived_secret("browser-state"))


def welcome(services: Services):
    """The page-load handler: keeps a valid token, or issues a new one (rate-limited per address)."""
    def issue(token: str, request: gr.Request) -> str:
        with user_errors(services.settings):
            return services.identities.welcome(token or "", request_address(request, services))

    return issue


def generating(services: Services, token: str, request: gr.Request | None) -> Identity:
    """The identity of someone asking for a generation, after the generation rate limits; gr.Error otherwise."""
    with user_errors(services.settings):
        return services.identities.generating(token or "", request_address(request, services))
