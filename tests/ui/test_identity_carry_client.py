"""Carrying one's runs to another browser through the API: a second client redeems the first's personal code and
then lists the first's runs; a used, wrong or empty code gets one clear message."""

from __future__ import annotations

import re

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from playground.finetune.runs import SUCCEEDED
from playground.identity_codes import FAILURES_PER_PERSON
from tests.ui.conftest import issue_token, owner_id

CODE = re.compile(r"\b[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{2}\b")


def finished_run(services, token: str) -> str:
    """A finished run (no training needed) owned by the token's person."""
    run_id = services.runs.create(owner_id(services, token), {"model": "smollm2-135m-instruct", "method": "lora"},
                                  "playground.finetune.train:run_job")
    services.runs.set_status(run_id, SUCCEEDED, force=True)
    return run_id


def listed_runs(client: Client, token: str) -> list[str]:
    """The run ids the Fine-tune tab's poll lists for ``token``."""
    picker = client.predict(token, "", api_name="/finetune_poll")[1]
    return [choice[1] for choice in picker["choices"]]


def test_a_second_client_redeems_the_first_ones_code_and_lists_its_runs(app_services, app_url):
    first, second = Client(app_url, verbose=False), Client(app_url, verbose=False)
    alice = issue_token(first)
    run_id = finished_run(app_services, alice)
    shown = first.predict(alice, api_name="/carry_code")
    code = CODE.search(shown).group(0)
    assert "15 minutes" in shown

    bob = issue_token(second)
    assert run_id not in listed_runs(second, bob)
    typed = code.lower().replace("-", " ")  # as someone types what they heard
    carried, box, status = second.predict(typed, bob, api_name="/carry_use")
    assert owner_id(app_services, carried) == owner_id(app_services, alice) != owner_id(app_services, bob)
    assert box == "" and "now holds your runs" in status
    assert run_id in listed_runs(second, carried)
    assert run_id in listed_runs(first, alice)  # the first browser keeps them too

    with pytest.raises(AppError, match="already used") as used:  # single use
        second.predict(code, bob, api_name="/carry_use")
    assert "Traceback" not in str(used.value)


@pytest.mark.parametrize("code, message", [("", "Paste the code"), ("K7QM-3XRD-P9", "cannot be used"),
                                           ("x" * 5000, "cannot be used")])
def test_a_wrong_or_empty_code_gets_a_clear_message(client, code, message):
    token = issue_token(client)
    with pytest.raises(AppError, match=message):
        client.predict(code, token, api_name="/carry_use")


def test_codes_need_a_valid_identity_token(client):
    with pytest.raises(AppError, match="identity token"):
        client.predict("", api_name="/carry_code")
    with pytest.raises(AppError, match="identity token"):
        client.predict("K7QM-3XRD-P9", "made-up", api_name="/carry_use")


def test_the_messages_come_in_the_pages_language(app_url):
    french = Client(app_url, verbose=False, headers={"Accept-Language": "fr-FR,fr;q=0.9"})
    token = issue_token(french)
    assert "minutes" in french.predict(token, api_name="/carry_code")
    with pytest.raises(AppError, match="Ce code est inutilisable"):
        french.predict("K7QM-3XRD-P9", token, api_name="/carry_use")


def test_guessing_is_cut_off_after_a_few_wrong_codes(client):
    token = issue_token(client)
    for _ in range(FAILURES_PER_PERSON):
        with pytest.raises(AppError, match="cannot be used"):
            client.predict("K7QM-3XRD-P9", token, api_name="/carry_use")
    with pytest.raises(AppError, match="Too many wrong codes from here. Try again in 15 minutes"):
        client.predict("K7QM-3XRD-P9", token, api_name="/carry_use")
