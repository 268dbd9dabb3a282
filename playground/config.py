"""Settings for one running app, from ``PLAYGROUND_*`` variables and CLI flags.

Every field carries its environment variable, its CLI flag and a help text;
the README's configuration table and ``python app.py --help`` are both made
from these, so they cannot drift apart. Bad values stop the app at start-up
with a message that names the variable or flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from playground.errors import SettingsError

MODES = ("local", "workshop", "presenter")
ENGINES = ("auto", "llama.cpp", "transformers")
WORKSHOP_DATA_BUDGET_GB = 20.0  # the data dir's budget in workshop mode unless PLAYGROUND_DATA_BUDGET_GB says otherwise


def _default_data_dir() -> str:
    # Spaces with persistent storage mount it at /data; elsewhere use the user cache.
    if os.environ.get("SPACE_ID") and Path("/data").is_dir():
        return "/data/playground"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "llm-playground")


def _default_host() -> str:
    # Gradio's own variable wins, so a Space (which sets it) keeps working unchanged.
    if os.environ.get("GRADIO_SERVER_NAME"):
        return os.environ["GRADIO_SERVER_NAME"]
    return "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"


def _default_port() -> int:
    try:
        return int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    except ValueError:
        return 7860


def _setting(default: Any = dataclasses.MISSING, *, help: str, factory: Any = None, **extra: Any):
    meta = {"help": help, **extra}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Everything the app needs to know before it starts; immutable once made."""

    host: str = _setting(factory=_default_host, help="Interface to listen on (0.0.0.0 to serve a network).")
    port: int = _setting(factory=_default_port, help="TCP port of the web server.", minimum=1, maximum=65535)
    share: bool = _setting(False, help="Ask Gradio for a public share link (needs internet).")
    mode: str = _setting(
        "local",
        help="local: everything allowed; workshop: only catalog models and per-request limits for many users; "
        "presenter: large text for a projector.",
        choices=MODES,
    )
    data_dir: Path = _setting(
        factory=lambda: Path(_default_data_dir()),
        help="Where converted models, runs and caches are written.",
    )
    models_dir: Path | None = _setting(
        None, help="A folder of local model copies, one sub-folder (or .gguf file) per catalog id or repo name."
    )
    offline: bool = _setting(
        factory=lambda: os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"),
        help="Never contact the Hugging Face Hub (defaults to HF_HUB_OFFLINE).",
    )
    engine: str = _setting(
        "auto",
        help="Engine for generation: auto (llama.cpp on CPU for GGUF models, transformers on CUDA), "
        "llama.cpp or transformers.",
        choices=ENGINES,
    )
    memory_budget_gb: float = _setting(
        6.0, help="Memory the model cache may use before it evicts the least recently used model.", minimum=0.1
    )
    threads: int = _setting(0, help="CPU threads for llama.cpp and torch (0: one per physical core).", minimum=0)
    max_new_tokens: int = _setting(
        1024, help="Upper limit on new tokens one request may ask for (workshop mode caps it at 256).", minimum=1
    )
    max_prompt_chars: int = _setting(
        20000, help="Upper limit on the characters of one prompt or chat message.", minimum=1
    )
    concurrency: int = _setting(
        2, help="How many generations may run at once in the app; further ones wait for a free slot (rendering a "
        "template or loading a model does not take one).", minimum=1
    )
    parallel: int = _setting(
        16, help="Sequences one llama.cpp model decodes together in one batch (each person's request is one); "
        "further requests wait in line for a free one.", minimum=1,
    )
    job_slots: int = _setting(
        0, help="How many fine-tuning runs may train at once, each in its own process; further runs wait in a "
        "queue (0: one per visible CUDA GPU, one on CPU).", minimum=0,
    )
    default_model: str = _setting("smollm2-135m-instruct", help="Catalog id selected when a tab opens.")
    data_budget_gb: float | None = _setting(
        None, help="Disk space (GB) the data dir may use; before a run starts or a download is built, the oldest "
        "finished runs are removed until it fits, and what cannot fit is refused with a message (0: no budget; "
        "unset: 20 in workshop mode, none otherwise).", minimum=0.0,
    )
    max_upload_mb: int = _setting(
        50, help="Largest file (MB) a browser may upload; Gradio refuses a bigger one before it is stored.",
        minimum=1,
    )

    # --- a room on one instance: identity and rate limits (playground/identity.py) ---------------
    secret: str = _setting(
        "", help="Key that signs the identity token each browser gets (empty: a random key made once and kept in "
        "the data dir as identity.key). Give every process of one deployment the same key.", secret=True,
    )
    trust_proxy: bool = _setting(
        factory=lambda: bool(os.environ.get("SPACE_ID")),
        help="Take the client's address from the last X-Forwarded-For entry (behind one trusted proxy such as "
        "Hugging Face Spaces; on by default there).",
    )
    identities_per_hour: int = _setting(
        0, help="New identities one network address may get per hour (0: the mode's default: 300 in workshop mode, "
        "no limit otherwise).", minimum=0,
    )
    generations_per_minute: int = _setting(
        0, help="Generations one person may start per minute; one address gets 20 times as many (0: the mode's "
        "default: 20 in workshop mode, no limit otherwise).", minimum=0,
    )
    runs_per_hour: int = _setting(
        0, help="Fine-tuning runs one person may start per hour; one address gets 20 times as many (0: the mode's "
        "default: 6 in workshop mode, no limit otherwise).", minimum=0,
    )
    active_runs_per_address: int = _setting(
        0, help="Fine-tuning runs started from one network address that may be queued or running at once (0: the "
        "mode's default: 8 in workshop mode, no limit otherwise).", minimum=0,
    )

    # --- derived values -------------------------------------------------
    @property
    def request_token_limit(self) -> int:
        return min(self.max_new_tokens, 256) if self.mode == "workshop" else self.max_new_tokens

    @property
    def catalog_only(self) -> bool:
        return self.mode == "workshop"

    @property
    def data_budget_bytes(self) -> int:
        """The data dir's budget in bytes (0: none); unset, 20 GB in workshop mode and none otherwise."""
        gigabytes = self.data_budget_gb
        if gigabytes is None:
            gigabytes = WORKSHOP_DATA_BUDGET_GB if self.mode == "workshop" else 0.0
        return int(gigabytes * 1e9)

    def as_environment(self) -> dict[str, str]:
        """These settings as PLAYGROUND_* variables, so a child process (a training job) sees the same ones."""
        environment = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or f.metadata.get("secret"):  # a worker never needs the signing key
                continue
            environment[self.env_var(f.name)] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return environment

    # --- construction ---------------------------------------------------
    @staticmethod
    def env_var(name: str) -> str:
        return f"PLAYGROUND_{name.upper()}"

    @staticmethod
    def cli_flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    @classmethod
    def load(cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> "Settings":
        """Settings from the environment, overridden by CLI flags; raises SettingsError."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(cls.env_var(f.name))
            if raw is not None and raw != "":
                values[f.name] = _convert(f, raw, cls.env_var(f.name))
        if argv is not None:
            parsed = vars(build_arg_parser().parse_args(list(argv)))
            for f in dataclasses.fields(cls):
                raw = parsed.get(f.name)
                if raw is not None:
                    values[f.name] = _convert(f, raw, cls.cli_flag(f.name))
        return cls(**values)

    def describe(self) -> list[tuple[str, str]]:
        return [(f.name, "(set)" if f.metadata.get("secret") and getattr(self, f.name) else str(getattr(self, f.name)))
                for f in dataclasses.fields(self)]


def _field_type(f: dataclasses.Field) -> str:
    return str(f.type).replace("Path | None", "optional_path")


def _convert(f: dataclasses.Field, raw: Any, where: str) -> Any:
    kind = _field_type(f)
    meta = f.metadata
    text = str(raw).strip()
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                value: Any = raw
            elif text.lower() in ("1", "true", "yes", "on"):
                value = True
            elif text.lower() in ("0", "false", "no", "off"):
                value = False
            else:
                raise ValueError("expected true or false")
        elif kind == "int":
            value = int(text)
        elif kind in ("float", "float | None"):
            value = float(text)
        elif kind in ("Path", "optional_path"):
            value = Path(text).expanduser()
        else:
            value = text
    except ValueError as exc:
        raise SettingsError(f"{where}={text!r} is not a valid {kind}: {exc}") from None
    if "choices" in meta and value not in meta["choices"]:
        raise SettingsError(f"{where}={text!r} is not one of: {', '.join(meta['choices'])}.")
    if "minimum" in meta and value < meta["minimum"]:
        raise SettingsError(f"{where}={text!r} must be at least {meta['minimum']}.")
    if "maximum" in meta and value > meta["maximum"]:
        raise SettingsError(f"{where}={text!r} must be at most {meta['maximum']}.")
    if kind == "optional_path" and not value.is_dir():
        raise SettingsError(f"{where}={text!r} is not an existing folder.")
    return value


def build_arg_parser(prog: str = "app.py") -> argparse.ArgumentParser:
    """CLI flags for every setting; the help text is the field's help plus its variable."""
    parser = argparse.ArgumentParser(prog=prog, description="Run the language-model playground.")
    for f in dataclasses.fields(Settings):
        help_text = f"{f.metadata['help']} [env {Settings.env_var(f.name)}]"
        if _field_type(f) == "bool":
            parser.add_argument(
                Settings.cli_flag(f.name), dest=f.name, default=None, action=argparse.BooleanOptionalAction,
                help=help_text,
            )
        else:
            parser.add_argument(Settings.cli_flag(f.name), dest=f.name, default=None, help=help_text)
    return parser


def settings_table_markdown() -> str:
    """The configuration table of the README, made from the dataclass."""
    rows = ["| variable | flag | default | what it does |", "|---|---|---|---|"]
    defaults = {"host": "127.0.0.1 (0.0.0.0 on Spaces)", "port": "7860", "data_dir": "~/.cache/llm-playground",
                "offline": "HF_HUB_OFFLINE", "data_budget_gb": f"{WORKSHOP_DATA_BUDGET_GB:g} in workshop mode, else 0",
                "secret": "(random, kept in the data dir)", "trust_proxy": "True on Spaces"}
    for f in dataclasses.fields(Settings):
        default = defaults.get(f.name, "" if f.default is dataclasses.MISSING else str(f.default))
        rows.append(
            f"| `{Settings.env_var(f.name)}` | `{Settings.cli_flag(f.name)}` | {default} | {f.metadata['help']} |"
        )
    return "\n".join(rows)
