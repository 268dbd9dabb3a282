"""``python -m playground walk record --out FILE``: record the course's walk from the app itself, for the Replay tab.

The app starts in this process in presenter mode on the offline packaged models (a fresh data folder unless one
is given), and ``gradio_client`` walks it as a presenter would, with Record on: an Architectures run on one
sentence; Prompt Lab runs of one bundled example zero-shot, few-shot and with chain-of-thought; a short LoRA
fine-tuning run of the CPU demo preset, polled until it ends (its loss curve, its scores before and after); and
one greedy answer in the Quantized CPU chat. Then it saves the walk through the page's own Save, reads it back
through the same checks as any walk file and writes it to ``--out``. Every result in the file was computed by
the app during this run; nothing is written by hand. Progress goes to standard output with counts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from playground.atomic import atomic_write_bytes
from playground.config import Settings
from playground.errors import PlaygroundError, SettingsError

DEFAULT_TITLE = "The course on the packaged models"
CHAT_QUESTION = "In two sentences: what does a language model do?"
POLL_S = 3.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m playground walk",
                                     description="Record a walk of the app for the Replay tab.")
    actions = parser.add_subparsers(dest="action", required=True)
    record = actions.add_parser("record", help="walk the tabs with Record on and write the walk to --out")
    record.add_argument("--out", type=Path, required=True, help="the walk file to write (e.g. examples/walks/"
                                                               "course.json)")
    record.add_argument("--title", default=DEFAULT_TITLE, help="the walk's title")
    record.add_argument("--language", choices=("en", "pt", "fr"), default="en",
                        help="the language the results are recorded in (the browser language the client sends)")
    record.add_argument("--data-dir", type=Path, default=None,
                        help="the app's data folder (default: a temporary one, removed afterwards)")
    record.add_argument("--finetune-steps", type=int, default=20, help="training steps of the fine-tuning run")
    record.add_argument("--finetune-timeout", type=float, default=1200.0,
                        help="seconds to wait for the fine-tuning run before giving up on it")
    record.add_argument("--skip-finetune", action="store_true", help="record the walk without a fine-tuning run")
    return parser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _say(text: str) -> None:
    print(f"[walk] {text}", flush=True)


@contextlib.contextmanager
def running_app(data_dir: Path):
    """The app in presenter mode on this machine's loopback, for the block: yields (services, URL)."""
    from playground.services import Services
    from playground.ui.app import build_app, launch_options

    environ = {**os.environ, "PLAYGROUND_MODE": "presenter", "PLAYGROUND_OFFLINE": "1",
               "PLAYGROUND_DATA_DIR": str(data_dir), "PLAYGROUND_HOST": "127.0.0.1",
               "PLAYGROUND_PORT": str(_free_port())}
    services = Services.create(Settings.load([], environ))
    demo = build_app(services)
    options = launch_options(services)
    options.update(prevent_thread_lock=True, quiet=True, share=False)
    demo.launch(**options)
    try:
        yield services, f"http://127.0.0.1:{services.settings.port}/"
    finally:
        demo.close()
        services.close()


class Walker:
    """One presenter's page, driven through the API with the page's own endpoints."""

    def __init__(self, services, client, language: str) -> None:
        self.services = services
        self.client = client
        self.language = language
        self.token = client.predict("", api_name="/identity")
        self.done = 0

    def step(self, what: str, call: Callable[[], object], total: int) -> object:
        started = time.monotonic()
        _say(f"step {self.done + 1} of {total}: {what} …")
        result = call()
        self.done += 1
        _say(f"  done in {time.monotonic() - started:.1f} s · {self.client.predict(api_name='/walk_status')}")
        return result

    # -- the tabs --------------------------------------------------------------------------------------------
    def architectures(self) -> None:
        from playground.architectures.tasks import DEFAULT_CANDIDATES, DEFAULT_INSTRUCTION, DEFAULT_LABELS, \
            DEFAULT_TEXT
        from playground.models.catalog import FAMILIES

        lab = self.services.architectures
        chosen = {}
        for family in FAMILIES:
            offline = [s.id for s in lab.models(family) if lab.available_offline(s.id)]
            chosen[family] = offline[0] if offline else None  # a family with no offline model stays empty
        self.client.predict(DEFAULT_TEXT, chosen["encoder"], chosen["encoder-decoder"], chosen["decoder"], "",
                            DEFAULT_INSTRUCTION, "\n".join(DEFAULT_CANDIDATES),
                            "\n".join(f"{a}: {b}" for a, b in DEFAULT_LABELS), 0, 8, api_name="/architectures_run")

    def prompt_lab(self, task: str, strategy: str, k: int = 3) -> None:
        from playground.prompting.lab import PromptLab
        from playground.prompting.templates import TemplateLibrary
        from playground.ui.tabs.prompt_lab import PROMPT_CONTROLS

        lab = PromptLab(TemplateLibrary.load(), token_limit=self.services.settings.request_token_limit)
        template = lab.templates_for(task, strategy)[0]
        params = lab.suggested(task, strategy)
        values = dict(task=task, template_id=template.id, template_text=template.template, system=template.system,
                      strategy=strategy, k=k, selection="fixed", selection_seed=0,
                      cot_trigger="Let's think step by step.", trigger_position="user", samples=5,
                      model_id=self.services.settings.default_model, engine="auto", text=lab.first_example(task),
                      max_new_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                      top_k=params.top_k, repetition_penalty=params.repetition_penalty,
                      seed=params.seed if params.seed is not None else 0, stop="")
        self.client.predict(*[values[name] for name in PROMPT_CONTROLS], self.token, api_name="/prompt_lab_run")

    def finetune(self, steps: int, timeout_s: float) -> str:
        """A short LoRA run of the CPU demo preset, polled (and so recorded) until it ends; returns its status."""
        from playground.finetune.config import FinetuneConfig
        from playground.ui.tabs.finetune import NUMBER_FIELDS

        preset = FinetuneConfig.cpu_demo()
        numbers = {name: getattr(preset, name) for name in NUMBER_FIELDS}
        # Fewer steps than the preset's 40 and fewer scored examples, so it ends in minutes on two cores; a
        # validation pass every few steps gives the curve its second line.
        numbers.update(max_steps=steps, eval_every=max(1, steps // 4), sample_count=4, test_limit=8)
        _, picker = self.client.predict(self.token, preset.model, preset.method, preset.data, None, "", "",
                                        preset.template, ", ".join(preset.target_modules),
                                        *numbers.values(), api_name="/finetune_start")
        run_id = picker["value"] if isinstance(picker, dict) else picker
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            status = self.client.predict(self.token, run_id, api_name="/finetune_poll")[2]
            line = " ".join(str(status).split("\n\n")[0].split())
            phase = re.sub(r" · [^·]*\d+ s\b[^·]*$", "", line)  # the same phase with a new time left: not news
            if phase != last:
                _say(f"  fine-tune: {line[:160]}")
                last = phase
            for word in ("succeeded", "failed", "cancelled"):
                if f"· {self.texts(f'ft.status.{word}')}" in str(status):
                    return word
            time.sleep(POLL_S)
        self.client.predict(self.token, run_id, api_name="/finetune_cancel")
        return "timed out"

    def texts(self, key: str) -> str:
        from playground.ui.i18n import Texts

        return Texts(self.language)(key)

    def chat(self) -> None:
        model = self.services.settings.default_model
        self.client.predict(CHAT_QUESTION, [], model, "", 96, 0.0, 1.0, 40, 1.0, 0, "", self.token,
                            api_name="/quantized_chat")


def record(args: argparse.Namespace) -> int:
    from gradio_client import Client

    from playground.walks import BUNDLED_DIR, WalkStore, walk_from_json, walk_json_bytes

    temporary = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="playground-walk-")) if temporary else args.data_dir
    try:
        with running_app(data_dir) as (services, url):
            _say(f"app in presenter mode at {url} (data: {'a temporary folder' if temporary else data_dir})")
            client = Client(url, verbose=False, headers={"Accept-Language": args.language})
            walker = Walker(services, client, args.language)
            _say(client.predict(True, api_name="/walk_record"))
            plan: list[tuple[str, Callable[[], object]]] = [
                ("Architectures: one sentence through the three families", walker.architectures),
                ("Prompt Lab: sentiment, zero-shot", lambda: walker.prompt_lab("sentiment", "zero_shot")),
                ("Prompt Lab: sentiment, few-shot (3 demonstrations)", lambda: walker.prompt_lab("sentiment",
                                                                                                 "few_shot")),
                ("Prompt Lab: arithmetic, few-shot chain-of-thought", lambda: walker.prompt_lab("arithmetic",
                                                                                              "few_shot_cot", 2)),
            ]
            outcome = {}
            if not args.skip_finetune:
                plan.append((f"Fine-tune: LoRA on SmolLM2, CPU demo preset, {args.finetune_steps} steps",
                             lambda: outcome.setdefault("finetune", walker.finetune(args.finetune_steps,
                                                                                    args.finetune_timeout))))
            plan.append(("Quantized CPU: one greedy chat answer", walker.chat))
            for what, call in plan:
                walker.step(what, call, len(plan))
            if outcome.get("finetune") not in (None, "succeeded"):
                _say(f"the fine-tuning run ended {outcome['finetune']}: its curve so far is in the walk")
            status = client.predict(args.title, walker.token, api_name="/walk_save")[0]
            _say(f"saved: {status}")
            store = WalkStore(BUNDLED_DIR, services.settings.data_dir / "walks")
            owner = services.identities.owner_of(walker.token)
            mine = [info for info in store.list(owner) if not info.bundled]
            if not mine:
                _say("the walk was not saved")
                return 1
            walk = store.load(mine[0].walk_id, owner)
        data = walk_json_bytes(walk)
        walk_from_json(data)  # what is written reads back
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out, data, "the walk")
        curve = next((step.loss_block for step in walk.steps if step.loss_block is not None), None)
        _say(f"wrote {args.out}: {len(walk.steps)} steps, {len(data):,} bytes, "
             f"{len(curve.events) if curve else 0} loss events; endpoints: "
             f"{', '.join(step.endpoint for step in walk.steps)}")
        return 0
    finally:
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return record(args)
    except (PlaygroundError, SettingsError) as exc:
        print(f"playground walk: {exc}", file=sys.stderr)
        return 2
