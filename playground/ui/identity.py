"""The browser's identity token in the UI: issued when a page opens, checked on every call that needs it.

The token lives in the browser's local storage (one ``gr.BrowserState`` made by
the app builder and passed to the tabs); the logic that signs, checks and
rate-limits is :mod:`playground.identity`. A script gets a token from the
``/identity`` endpoint and passes it as the ``identity`` argument of the
endpoints that take one.

:func:`carry_panel` lets a person take that identity (and so their runs) to
another browser with a short personal code (:mod:`playground.identity_codes`):
"Show my code" on the first browser, "Use it" on the other, whose stored token
then names the same person; the app builder refreshes the run lists after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from playground.identity import Identity, client_address
from playground.identity_codes import CodeError, CodeGuessLimit
from playground.services import Services
from playground.ui.i18n import Texts, t
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


# ------------------------------------------------------------------ carrying one's runs to another browser


def code_text(texts: Texts, code: str, minutes: int) -> str:
    """What "Show my code" shows: the code, large, and how long it lasts."""
    return texts("carry.your_code", code=code, minutes=minutes)


def refusal_text(exc: CodeError, texts: Texts, minutes: int) -> str:
    """A code that cannot be used, in the page's language."""
    if isinstance(exc, CodeGuessLimit):
        return texts("carry.too_many", minutes=max(1, -(-exc.retry_s // 60)))
    return texts({"empty": "carry.empty", "full": "carry.full"}.get(exc.reason, "carry.invalid"), minutes=minutes)


def on_show_code(services: Services, texts: Texts, token: str, address: str) -> str:
    """The person's new code (their previous one stops working)."""
    identities = services.identities
    with user_errors(services.settings):
        try:
            carry = identities.carry_code(token or "", address)
        except CodeError as exc:
            raise gr.Error(refusal_text(exc, texts, _minutes(services)), print_exception=False) from None
    return code_text(texts, carry.code, carry.minutes_left(identities.codes.clock()))


def on_use_code(services: Services, texts: Texts, code: str, token: str, address: str) -> tuple[str, str, str]:
    """(this browser's new token, the emptied code box, the status line) once ``code`` is redeemed."""
    with user_errors(services.settings):
        try:
            new_token = services.identities.use_carry_code(code or "", token or "", address)
        except CodeError as exc:
            raise gr.Error(refusal_text(exc, texts, _minutes(services)), print_exception=False) from None
    gr.Info(texts("carry.switched"))
    return new_token, "", texts("carry.switched")


def _minutes(services: Services) -> int:
    return int(services.identities.codes.lifetime_s // 60)


@dataclass(frozen=True)
class CarryPanel:
    """The "Use your runs on another browser" accordion; ``switched`` is the event that changed the token."""

    switched: object  # a gradio event (Dependency)

    def then_refresh(self, refreshes) -> None:
        """Run each ``(handler, inputs, outputs)`` after a successful switch (the pickers that list runs)."""
        for handler, inputs, outputs in refreshes:
            self.switched.success(handler, inputs, outputs, api_name=False, queue=False, show_progress="hidden")


def carry_panel(services: Services, owner: gr.BrowserState) -> CarryPanel:
    """The accordion, placed where it is called; ``owner`` is the browser's identity token."""
    with gr.Accordion(t("carry.title"), open=False, elem_id="carry"):
        gr.Markdown(t("carry.intro"))
        with gr.Row(equal_height=False):
            with gr.Column():
                show = gr.Button(t("carry.show"), elem_id="carry-show")
                shown = gr.Markdown(elem_id="carry-code")
            with gr.Column():
                pasted = gr.Textbox(label=t("carry.paste"), placeholder=t("carry.placeholder"), max_lines=1,
                                    max_length=64, elem_id="carry-paste")
                use = gr.Button(t("carry.use"), variant="primary", elem_id="carry-use")
                status = gr.Markdown(elem_id="carry-status")

    def show_code(request: gr.Request, token):
        return on_show_code(services, Texts.for_request(request), token, request_address(request, services))

    def use_code(request: gr.Request, code, token):
        return on_use_code(services, Texts.for_request(request), code, token, request_address(request, services))

    # Queued in groups of their own without a limit (a gr.Error reaches the page as a toast only from the queue),
    # so they never wait behind generations.
    show.click(show_code, owner, shown, api_name="carry_code", concurrency_limit=None, concurrency_id="carry")
    switched = gr.on([use.click, pasted.submit], use_code, [pasted, owner], [owner, pasted, status],
                     api_name="carry_use", concurrency_limit=None, concurrency_id="carry")
    return CarryPanel(switched)
