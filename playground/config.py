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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from playground.errors import SettingsError

MODES = ("local", "workshop", "presenter")
ENGINES = ("auto", "llama.cpp", "transformers", "openai")  # the names of playground/backends/selection.py
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
        help="Engine for generation: auto (the OpenAI-compatible server for the models it serves, else llama.cpp on "
        "CPU for GGUF models and transformers on CUDA), llama.cpp, transformers or openai.",
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
        32, help="Sequences one llama.cpp model decodes together in one batch (each person's request is one); "
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

    # --- past one machine: generation on an OpenAI-compatible server (playground/backends/openai_engine.py) ---
    openai_base_url: str = _setting(
        "", help="API root of an OpenAI-compatible server (llama.cpp's server, vLLM, TGI) that generates for the "
        "models in PLAYGROUND_OPENAI_MODELS, e.g. http://127.0.0.1:8080/v1 (empty: no server; every model runs in "
        "this process).",
    )
    openai_api_key: str = _setting(
        "", help="Key sent to that server as 'Authorization: Bearer <key>' (empty: none).", secret=True,
    )
    openai_models: str = _setting(
        "", help="Comma-separated catalog ids that server serves, each optionally id=served-name when the server "
        "knows the model by another name (e.g. smollm2-135m-instruct=smollm2); these ids generate there under "
        "engine auto.",
    )
    openai_context: int = _setting(
        0, help="Context window in tokens of the served models (0: what the server reports: vLLM's max_model_len, "
        "llama.cpp's /props or TGI's /info; 2048 when it reports none).", minimum=0,
    )

    def __post_init__(self) -> None:
        # Cross-field checks; each field's own type and range are checked by _convert as it is read.
        url = self.openai_base_url.strip().rstrip("/")
        object.__setattr__(self, "openai_base_url", url)
        check_openai_base_url(url)
        served = self.openai_served_models  # parses, and refuses a malformed list
        if served and not url:
            raise SettingsError(f"{_names('openai_models')} lists models, but {_names('openai_base_url')} is empty: "
                                f"set it to the server's API root, e.g. http://127.0.0.1:8080/v1.")
        if url and not served:
            raise SettingsError(f"{_names('openai_base_url')} is set, but {_names('openai_models')} is empty: list "
                                f"the catalog ids the server serves, e.g. smollm2-135m-instruct=smollm2.")
        if self.engine == "openai" and not url:
            raise SettingsError(f"{_names('engine')}=openai needs an OpenAI-compatible server: set "
                                f"{_names('openai_base_url')} and {_names('openai_models')}.")

    # --- derived values -------------------------------------------------
    @property
    def openai_served_models(self) -> dict[str, str]:
        """Catalog id -> the name the OpenAI-compatible server serves it under, from PLAYGROUND_OPENAI_MODELS."""
        return parse_served_models(self.openai_models)

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


def _names(name: str) -> str:
    """A setting as a person sets it: 'PLAYGROUND_X (--x)' (the variable and the flag)."""
    return f"{Settings.env_var(name)} ({Settings.cli_flag(name)})"


# A catalog id as catalog.yaml writes them (smollm2-135m-instruct, qwen2.5-0.5b-instruct); whether the catalog
# really holds it is checked where the catalog is known (EngineProvider).
_CATALOG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_openai_base_url(url: str) -> None:
    """Refuse an OpenAI base URL that is not a plain http(s) URL; "" (no server) is fine."""
    if not url:
        return
    where = _names("openai_base_url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError as exc:
        raise SettingsError(f"{where}={url!r} is not a valid URL: {exc}.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{where}={url!r} must be an http:// or https:// URL with a host, e.g. "
                            f"http://127.0.0.1:8080/v1.")
    if parts.username or parts.password:
        # The URL appears in error messages; a key belongs in the secret setting, which never does.
        raise SettingsError(f"{where} must not carry a user name or password; put the key in "
                            f"{_names('openai_api_key')}.")
    if parts.query or parts.fragment:
        raise SettingsError(f"{where}={url!r} must be the API root without '?' or '#', e.g. "
                            f"http://127.0.0.1:8080/v1.")


def parse_served_models(text: str) -> dict[str, str]:
    """``id[=served-name], ...`` as {catalog id: served name}; raises SettingsError naming the variable."""
    where = _names("openai_models")
    served: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        model_id, equals, name = (part.strip() for part in item.partition("="))
        name = name if equals else model_id
        if not model_id or not name:
            raise SettingsError(f"{where}: {item!r} needs a catalog id before '=' and the served name after it, "
                                f"e.g. smollm2-135m-instruct=smollm2.")
        if not _CATALOG_ID.fullmatch(model_id):
            raise SettingsError(f"{where}: {model_id!r} is not a catalog id (letters, digits, '.', '_' and '-').")
        if any(c.isspace() for c in name):
            raise SettingsError(f"{where}: the served name {name!r} may not contain spaces.")
        if model_id in served:
            raise SettingsError(f"{where} lists {model_id!r} twice.")
        served[model_id] = name
    return served


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
