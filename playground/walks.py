"""Recorded walks: what a presenter showed, kept so it can be replayed on stage without computing anything.

A :class:`Walk` is a titled list of :class:`WalkStep` (one per main result of a tab: an Architectures run, a
Prompt Lab answer, a quantized chat reply, a fine-tuning run's loss curve and scores), each made of
:class:`Block` of a few kinds: Markdown, plain text, HTML the app rendered (charts, token chips), a table, label
scores, chat messages and a loss curve (training and validation events).

Walks are JSON files with a strict reader (:func:`walk_from_json`): a size cap, a bounded number of steps,
blocks, rows and characters, no unknown keys and no unknown kinds, each refused with a :class:`WalkError` that
says what is wrong. HTML is only ever read from walks that are bundled with the app (``examples/walks``) or
that this server wrote itself, and is passed through :func:`sanitize_html` (an allow-list of tags and
attributes) before it is shown all the same.

:class:`WalkStore` lists and loads the bundled walks and each person's recorded ones (``<data dir>/walks/<owner
hash>/``, written atomically, a few per person); :class:`WalkRecorder` holds the recording in progress of each
browser session, bounded in steps and bytes; :func:`loss_frames` turns a loss curve into the frames of a redraw
over a chosen number of seconds. Nothing here imports gradio.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from playground.atomic import atomic_write_text
from playground.errors import WalkError

FORMAT = "playground-walk/1"
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "examples" / "walks"

# Budgets: a walk file a browser can replay at once, and a recording one presenter's session can hold.
MAX_FILE_BYTES = 2_000_000
MAX_STEPS = 100
MAX_BLOCKS = 40  # per step
MAX_TITLE_CHARS = 200
MAX_TEXT_CHARS = 200_000  # one Markdown, text or HTML block
MAX_TABLE_ROWS = 200
MAX_TABLE_COLUMNS = 24
MAX_CELL_CHARS = 2_000
MAX_LABELS = 50
MAX_MESSAGES = 100
MAX_MESSAGE_CHARS = 20_000
MAX_LOSS_EVENTS = 5_000
MAX_MODELS = 50
MAX_WALKS_PER_OWNER = 20
MAX_ID_CHARS = 80

KINDS = ("markdown", "text", "html", "table", "label", "chat", "loss")
# The fields each kind of block has besides "kind" and "label"; any other field is an error.
KIND_FIELDS = {"markdown": ("text",), "text": ("text",), "html": ("text",), "table": ("columns", "rows"),
               "label": ("labels",), "chat": ("messages",), "loss": ("events",)}
LOSS_KINDS = ("train", "validation")
CHAT_ROLES = ("user", "assistant", "system")
SOURCES = ("bundled", "recorded")
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # a walk file's name, without .json
WORD_ID = re.compile(r"[a-z][a-z0-9_]{0,63}")  # a tab or endpoint name
LANGUAGE = re.compile(r"[a-z]{2}")
ELLIPSIS = "…"


# ------------------------------------------------------------------------------ what a walk holds


@dataclass(frozen=True)
class LossEvent:
    """One point of a loss curve: a training step's loss, or a validation pass at that step."""

    step: int
    loss: float
    kind: str = "train"  # "train" or "validation"


@dataclass(frozen=True)
class Block:
    """One thing a step shows. ``label`` is a locale key of the app (shown translated) or a caption as recorded;
    the other fields are those of the kind (``KIND_FIELDS``)."""

    kind: str
    label: str = ""
    text: str = ""  # markdown, text, html
    columns: tuple[str, ...] = ()  # table
    rows: tuple[tuple[str, ...], ...] = ()  # table
    labels: tuple[tuple[str, float], ...] = ()  # label: (name, share from 0 to 1), highest first
    messages: tuple[tuple[str, str], ...] = ()  # chat: (role, content)
    events: tuple[LossEvent, ...] = ()  # loss

    # Makers for the recorder: each clips what it is given to the budgets, so a recording always reads back.
    @classmethod
    def markdown(cls, text: str, label: str = "") -> "Block":
        return cls("markdown", clip(label, MAX_TITLE_CHARS), text=clip(text, MAX_TEXT_CHARS))

    @classmethod
    def plain(cls, text: str, label: str = "") -> "Block":
        return cls("text", clip(label, MAX_TITLE_CHARS), text=clip(text, MAX_TEXT_CHARS))

    @classmethod
    def html(cls, text: str, label: str = "") -> "Block":
        # Cut by whole characters of the sanitised text: a cut tag would only lose its end.
        return cls("html", clip(label, MAX_TITLE_CHARS), text=clip(sanitize_html(text), MAX_TEXT_CHARS))

    @classmethod
    def table(cls, columns: Iterable[Any], rows: Iterable[Iterable[Any]], label: str = "") -> "Block":
        cols = tuple(clip(cell_text(c), MAX_CELL_CHARS) for c in list(columns)[:MAX_TABLE_COLUMNS])
        width = len(cols)
        kept = []
        for row in rows:
            if len(kept) == MAX_TABLE_ROWS:
                break
            cells = [clip(cell_text(c), MAX_CELL_CHARS) for c in list(row)[:MAX_TABLE_COLUMNS]]
            if width:
                cells = (cells + [""] * width)[:width]
            kept.append(tuple(cells))
        return cls("table", clip(label, MAX_TITLE_CHARS), columns=cols, rows=tuple(kept))

    @classmethod
    def scores(cls, labels: Mapping[str, float], label: str = "") -> "Block":
        pairs = sorted(((clip(str(k), MAX_CELL_CHARS), float(v)) for k, v in labels.items()
                        if _finite(v)), key=lambda pair: -pair[1])
        return cls("label", clip(label, MAX_TITLE_CHARS),
                   labels=tuple((k, min(1.0, max(0.0, v))) for k, v in pairs[:MAX_LABELS]))

    @classmethod
    def chat(cls, messages: Iterable[tuple[str, str]], label: str = "") -> "Block":
        kept = [(role, clip(content, MAX_MESSAGE_CHARS)) for role, content in messages if role in CHAT_ROLES]
        return cls("chat", clip(label, MAX_TITLE_CHARS), messages=tuple(kept[-MAX_MESSAGES:]))

    @classmethod
    def loss(cls, events: Iterable[LossEvent], label: str = "") -> "Block":
        kept = [e for e in events if e.kind in LOSS_KINDS and _finite(e.loss) and 0 <= e.step <= 10_000_000]
        return cls("loss", clip(label, MAX_TITLE_CHARS), events=tuple(kept[:MAX_LOSS_EVENTS]))

    @property
    def empty(self) -> bool:
        return not (self.text.strip() or self.rows or self.labels or self.messages or self.events)

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"kind": self.kind}
        if self.label:
            data["label"] = self.label
        for name in KIND_FIELDS[self.kind]:
            value = getattr(self, name)
            if name == "events":
                value = [{"step": e.step, "loss": e.loss, "kind": e.kind} for e in value]
            elif name in ("rows", "labels", "messages"):
                value = [list(item) for item in value]
            elif name == "columns":
                value = list(value)
            data[name] = value
        return data


@dataclass(frozen=True)
class WalkStep:
    """One recorded result: the tab it came from, the event (its API name), a title and what it showed."""

    tab: str
    endpoint: str
    title: str
    blocks: tuple[Block, ...]

    def to_dict(self) -> dict:
        return {"tab": self.tab, "endpoint": self.endpoint, "title": self.title,
                "blocks": [block.to_dict() for block in self.blocks]}

    @property
    def loss_block(self) -> Block | None:
        return next((block for block in self.blocks if block.kind == "loss"), None)


@dataclass(frozen=True)
class Walk:
    """A recorded walk: its title, when and in which language it was recorded, the app's version and the
    models it had, and its steps."""

    title: str
    recorded_at: str  # ISO 8601, UTC
    steps: tuple[WalkStep, ...]
    language: str = "en"
    app_version: str = ""
    models: tuple[str, ...] = ()

    @property
    def recorded_on(self) -> str:
        """The day it was recorded (YYYY-MM-DD), the same in every language."""
        return self.recorded_at[:10]

    def to_dict(self) -> dict:
        return {"format": FORMAT, "title": self.title, "recorded_at": self.recorded_at, "language": self.language,
                "app_version": self.app_version, "models": list(self.models),
                "steps": [step.to_dict() for step in self.steps]}


@dataclass(frozen=True)
class WalkInfo:
    """A walk as a picker lists it."""

    walk_id: str  # "bundled:<name>" or "recorded:<name>"
    title: str
    recorded_at: str
    steps: int

    @property
    def bundled(self) -> bool:
        return self.walk_id.startswith("bundled:")


# ------------------------------------------------------------------------------ small helpers


def clip(text: Any, limit: int) -> str:
    """``text`` as a string of at most ``limit`` characters (cut ones end with an ellipsis)."""
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + ELLIPSIS


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:g}"
    return str(value)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def utc_now_text() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def walk_json_bytes(walk: Walk) -> bytes:
    return (json.dumps(walk.to_dict(), ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def step_size(step: WalkStep) -> int:
    """The bytes a step takes in a walk file (near enough: the file is indented a little more)."""
    return len(json.dumps(step.to_dict(), ensure_ascii=False).encode("utf-8"))


# ------------------------------------------------------------------------------ reading a walk file, strictly


class _Reader:
    """Checks one walk's JSON value field by field; every problem names where it is."""

    def fail(self, where: str, problem: str) -> WalkError:
        return WalkError(f"This walk file cannot be replayed: {where} {problem}.").keyed(
            "replay.error.bad_file", where=where, problem=problem)

    def mapping(self, value: Any, where: str, required: Iterable[str], optional: Iterable[str] = ()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, "is not an object")
        required, optional = tuple(required), tuple(optional)
        unknown = sorted(set(value) - set(required) - set(optional))
        if unknown:
            raise self.fail(where, f"has unknown keys {', '.join(map(repr, unknown[:5]))}")
        missing = [key for key in required if key not in value]
        if missing:
            raise self.fail(where, f"lacks {', '.join(map(repr, missing))}")
        return value

    def text(self, value: Any, where: str, limit: int, pattern: re.Pattern | None = None) -> str:
        if not isinstance(value, str):
            raise self.fail(where, "is not text")
        if len(value) > limit:
            raise self.fail(where, f"is longer than {limit:,} characters")
        if "\x00" in value:
            raise self.fail(where, "holds a NUL character")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(where, "is not a valid name")
        return value

    def items(self, value: Any, where: str, limit: int) -> list:
        if not isinstance(value, list):
            raise self.fail(where, "is not a list")
        if len(value) > limit:
            raise self.fail(where, f"has more than {limit:,} items")
        return value

    def number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(where, "is not a finite number")
        return float(value)

    def walk(self, data: Any) -> Walk:
        data = self.mapping(data, "the walk", ("format", "title", "recorded_at", "steps"),
                            ("language", "app_version", "models"))
        if data["format"] != FORMAT:
            raise self.fail("'format'", f"is not {FORMAT!r}")
        recorded_at = self.text(data["recorded_at"], "'recorded_at'", 40)
        try:
            datetime.fromisoformat(recorded_at.replace("Z", "+00:00"))
        except ValueError:
            raise self.fail("'recorded_at'", "is not an ISO 8601 date and time") from None
        models = tuple(self.text(m, f"models[{i}]", MAX_TITLE_CHARS)
                       for i, m in enumerate(self.items(data.get("models", []), "'models'", MAX_MODELS)))
        steps = tuple(self.step(step, f"steps[{i}]")
                      for i, step in enumerate(self.items(data["steps"], "'steps'", MAX_STEPS)))
        return Walk(title=self.text(data["title"], "'title'", MAX_TITLE_CHARS), recorded_at=recorded_at,
                    steps=steps, language=self.text(data.get("language", "en"), "'language'", 2, LANGUAGE),
                    app_version=self.text(data.get("app_version", ""), "'app_version'", 40), models=models)

    def step(self, data: Any, where: str) -> WalkStep:
        data = self.mapping(data, where, ("tab", "endpoint", "title", "blocks"))
        blocks = tuple(self.block(block, f"{where}.blocks[{i}]")
                       for i, block in enumerate(self.items(data["blocks"], f"{where}.blocks", MAX_BLOCKS)))
        return WalkStep(tab=self.text(data["tab"], f"{where}.tab", 64, WORD_ID),
                        endpoint=self.text(data["endpoint"], f"{where}.endpoint", 64, WORD_ID),
                        title=self.text(data["title"], f"{where}.title", MAX_TITLE_CHARS), blocks=blocks)

    def block(self, data: Any, where: str) -> Block:
        if not isinstance(data, dict):
            raise self.fail(where, "is not an object")
        kind = data.get("kind")
        if kind not in KIND_FIELDS:
            raise self.fail(where, f"is of an unknown kind {str(kind)[:40]!r} (known: {', '.join(KINDS)})")
        data = self.mapping(data, where, ("kind", *KIND_FIELDS[kind]), ("label",))
        label = self.text(data.get("label", ""), f"{where}.label", MAX_TITLE_CHARS)
        if kind in ("markdown", "text"):
            return Block(kind, label, text=self.text(data["text"], f"{where}.text", MAX_TEXT_CHARS))
        if kind == "html":  # sanitised again: a file is trusted only so far
            return Block(kind, label, text=sanitize_html(self.text(data["text"], f"{where}.text", MAX_TEXT_CHARS)))
        if kind == "table":
            columns = tuple(self.text(c, f"{where}.columns[{i}]", MAX_CELL_CHARS) for i, c in
                            enumerate(self.items(data["columns"], f"{where}.columns", MAX_TABLE_COLUMNS)))
            rows = []
            for r, row in enumerate(self.items(data["rows"], f"{where}.rows", MAX_TABLE_ROWS)):
                cells = self.items(row, f"{where}.rows[{r}]", MAX_TABLE_COLUMNS)
                rows.append(tuple(self.text(c, f"{where}.rows[{r}][{i}]", MAX_CELL_CHARS) for i, c in enumerate(cells)))
            return Block(kind, label, columns=columns, rows=tuple(rows))
        if kind == "label":
            pairs = []
            for i, pair in enumerate(self.items(data["labels"], f"{where}.labels", MAX_LABELS)):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise self.fail(f"{where}.labels[{i}]", "is not a [name, share] pair")
                share = self.number(pair[1], f"{where}.labels[{i}][1]")
                if not 0.0 <= share <= 1.0:
                    raise self.fail(f"{where}.labels[{i}][1]", "is not between 0 and 1")
                pairs.append((self.text(pair[0], f"{where}.labels[{i}][0]", MAX_CELL_CHARS), share))
            return Block(kind, label, labels=tuple(pairs))
        if kind == "chat":
            messages = []
            for i, pair in enumerate(self.items(data["messages"], f"{where}.messages", MAX_MESSAGES)):
                if not isinstance(pair, list) or len(pair) != 2 or pair[0] not in CHAT_ROLES:
                    raise self.fail(f"{where}.messages[{i}]", f"is not a [role, text] pair (roles: "
                                                              f"{', '.join(CHAT_ROLES)})")
                messages.append((pair[0], self.text(pair[1], f"{where}.messages[{i}][1]", MAX_MESSAGE_CHARS)))
            return Block(kind, label, messages=tuple(messages))
        events = []
        for i, event in enumerate(self.items(data["events"], f"{where}.events", MAX_LOSS_EVENTS)):
            event = self.mapping(event, f"{where}.events[{i}]", ("step", "loss", "kind"))
            step = self.number(event["step"], f"{where}.events[{i}].step")
            if step != int(step) or not 0 <= step <= 10_000_000:
                raise self.fail(f"{where}.events[{i}].step", "is not a whole number of steps")
            if event["kind"] not in LOSS_KINDS:
                raise self.fail(f"{where}.events[{i}].kind", f"is not one of {', '.join(LOSS_KINDS)}")
            events.append(LossEvent(int(step), self.number(event["loss"], f"{where}.events[{i}].loss"),
                                    event["kind"]))
        return Block(kind, label, events=tuple(events))


def walk_from_json(raw: bytes | str) -> Walk:
    """The walk in ``raw`` (a walk file's bytes), checked against every budget; WalkError says what is wrong."""
    data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    if len(data) > MAX_FILE_BYTES:
        raise too_big(len(data))
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = getattr(exc, "msg", None) or type(exc).__name__
        raise _Reader().fail("the file", f"is not JSON ({reason})") from None
    return _Reader().walk(value)


def blocks_from_dicts(items: Any, where: str = "the step") -> list[Block]:
    """Blocks in their file form (a step's "blocks"), read through the same checks as a walk file."""
    reader = _Reader()
    return [reader.block(item, f"{where}.blocks[{i}]") for i, item in enumerate(reader.items(items, where, MAX_BLOCKS))]


def too_big(size: int) -> WalkError:
    return WalkError(f"This walk is {size:,} bytes; a walk may be at most {MAX_FILE_BYTES:,}.").keyed(
        "replay.error.too_big", size=f"{size:,}", limit=f"{MAX_FILE_BYTES:,}")


def checked_walk(walk: Walk) -> Walk:
    """``walk`` as it will read back from its file (the same checks), or WalkError before anything is written."""
    data = walk_json_bytes(walk)
    return walk_from_json(data)


# ------------------------------------------------------------------------------ HTML: an allow-list


ALLOWED_TAGS = frozenset("""
    div span p b strong i em u small sub sup br hr code pre kbd table thead tbody tfoot tr th td caption
    ul ol li h1 h2 h3 h4 h5 h6 blockquote svg g line polyline polygon path circle rect ellipse text tspan title
""".split())
# Tags whose content goes too (a script's text is not text to show).
DROPPED_WITH_CONTENT = frozenset("script style iframe object embed template noscript textarea select "
                                 "frameset frame applet math".split())
VOID_TAGS = frozenset({"br", "hr"})
ALLOWED_ATTRIBUTES = frozenset("""
    class style title role aria-label aria-hidden aria-valuenow aria-valuemin aria-valuemax data-series colspan
    rowspan align viewbox preserveaspectratio width height x y x1 x2 y1 y2 cx cy r rx ry points d fill stroke
    stroke-width stroke-dasharray stroke-linecap opacity fill-opacity text-anchor dominant-baseline transform
    font-size font-weight
""".split())
SVG_NAMES = {"viewbox": "viewBox", "preserveaspectratio": "preserveAspectRatio"}
# Values that could fetch or run something, whatever the attribute (no attribute that takes a URL is allowed).
UNSAFE_VALUE = re.compile(r"javascript:|vbscript:|data:|url\(|expression\(|@import|behavior:|-moz-binding|[<>\\]",
                          re.IGNORECASE)


class _Sanitizer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.dropping = 0  # depth inside a tag dropped with its content

    def _attributes(self, attrs) -> str:
        kept = []
        for name, value in attrs:
            name = (name or "").lower()
            if name not in ALLOWED_ATTRIBUTES:
                continue
            value = value or ""
            if UNSAFE_VALUE.search(re.sub(r"\s+", "", value)):
                continue
            kept.append(f' {SVG_NAMES.get(name, name)}="{html.escape(value, quote=True)}"')
        return "".join(kept)

    def handle_starttag(self, tag, attrs):
        tag = tag.lower()
        if tag in DROPPED_WITH_CONTENT:
            self.dropping += 1
        elif not self.dropping and tag in ALLOWED_TAGS:
            self.parts.append(f"<{tag}{self._attributes(attrs)}>")

    def handle_startendtag(self, tag, attrs):
        tag = tag.lower()
        if not self.dropping and tag in ALLOWED_TAGS:
            self.parts.append(f"<{tag}{self._attributes(attrs)}>" if tag in VOID_TAGS
                              else f"<{tag}{self._attributes(attrs)}/>")

    def handle_endtag(self, tag):
        tag = tag.lower()
        if tag in DROPPED_WITH_CONTENT:
            self.dropping = max(0, self.dropping - 1)
        elif not self.dropping and tag in ALLOWED_TAGS and tag not in VOID_TAGS:
            self.parts.append(f"</{tag}>")

    def handle_data(self, data):
        if not self.dropping:
            self.parts.append(html.escape(data, quote=False))


def sanitize_html(text: str) -> str:
    """``text`` with only the tags and attributes the app's own charts, tables and chips use: no script, no
    event handler, no link, image, frame or form, no value that could fetch or run anything; text re-escaped."""
    parser = _Sanitizer()
    parser.feed(str(text or ""))
    parser.close()
    return "".join(parser.parts)


# ------------------------------------------------------------------------------ pacing a loss curve


FRAMES_PER_SECOND = 4
MAX_FRAMES = 120
MIN_PACE_S, MAX_PACE_S, DEFAULT_PACE_S = 3, 60, 10


@dataclass(frozen=True)
class Frame:
    at_s: float  # seconds after the redraw starts
    shown: int  # how many of the curve's events are drawn


def loss_frames(count: int, seconds: float, fps: float = FRAMES_PER_SECOND, max_frames: int = MAX_FRAMES
                ) -> tuple[Frame, ...]:
    """The frames that redraw a curve of ``count`` events over ``seconds`` (clipped to the pace slider's range):
    evenly spaced, each drawing more events than the one before, the last drawing all of them at ``seconds``.
    At most ``max_frames`` and at most one frame per event, so a short curve appears point by point."""
    count = max(0, int(count))
    seconds = min(float(MAX_PACE_S), max(0.0, float(seconds)))
    if count == 0:
        return (Frame(0.0, 0),)
    frames = max(1, min(count, int(max_frames), math.ceil(seconds * fps) or 1))
    return tuple(Frame(round(seconds * i / frames, 6), math.ceil(count * i / frames)) for i in range(1, frames + 1))


# ------------------------------------------------------------------------------ where walks are kept


def owner_folder(owner: str) -> str:
    """A person's folder name: a hash of their owner id (the id itself never becomes a path)."""
    return hashlib.sha256(f"walks:{owner}".encode("utf-8")).hexdigest()[:32]


def parse_walk_id(walk_id: Any) -> tuple[str, str]:
    """(source, name) of a walk id such as ``bundled:course`` or ``recorded:20261203-ab12cd``; WalkError for
    anything else (a path, a NUL, an absolute path, an overlong or empty id, another source)."""
    if not isinstance(walk_id, str) or not walk_id or len(walk_id) > MAX_ID_CHARS:
        raise _no_walk(walk_id)
    source, colon, name = walk_id.partition(":")
    if not colon or source not in SOURCES or not NAME.fullmatch(name):
        raise _no_walk(walk_id)
    return source, name


def _no_walk(walk_id: Any) -> WalkError:
    shown = clip(repr(walk_id), 60)
    return WalkError(f"There is no walk {shown} to replay here. Choose one from the list.").keyed(
        "replay.error.no_walk", walk=shown)


class WalkStore:
    """The bundled walks (``bundled_dir/*.json``) and each person's recorded ones (``recorded_dir/<owner
    hash>/*.json``, at most ``per_owner``). One person never sees another's."""

    def __init__(self, bundled_dir: Path, recorded_dir: Path, per_owner: int = MAX_WALKS_PER_OWNER) -> None:
        self.bundled_dir = Path(bundled_dir)
        self.recorded_dir = Path(recorded_dir)
        self.per_owner = per_owner
        self._lock = threading.Lock()  # saving: the per-person count and the write happen together

    def _folder(self, source: str, owner: str) -> Path | None:
        if source == "bundled":
            return self.bundled_dir
        return self.recorded_dir / owner_folder(owner) if owner else None

    def _path(self, walk_id: str, owner: str) -> Path:
        source, name = parse_walk_id(walk_id)
        folder = self._folder(source, owner)
        if folder is None:
            raise _no_walk(walk_id)
        path = folder / f"{name}.json"
        # The name's pattern already keeps it in its folder; a link out of it is refused as well.
        if path.is_symlink() or path.resolve().parent != folder.resolve():
            raise _no_walk(walk_id)
        return path

    def _files(self, source: str, owner: str) -> list[tuple[str, Path]]:
        folder = self._folder(source, owner)
        if folder is None or not folder.is_dir():
            return []
        return [(f"{source}:{path.stem}", path) for path in sorted(folder.glob("*.json"))
                if NAME.fullmatch(path.stem) and path.is_file() and not path.is_symlink()]

    def load(self, walk_id: str, owner: str = "") -> Walk:
        path = self._path(walk_id, owner)
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise too_big(size)  # without reading it
            with open(path, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            raise _no_walk(walk_id) from None
        except OSError as exc:
            raise WalkError(f"The walk {walk_id} cannot be read: {exc.strerror or exc}.") from None
        return walk_from_json(data)

    def list(self, owner: str = "") -> list[WalkInfo]:
        """Bundled walks first (by name), then the person's recorded ones, newest first. A file that does not
        read is left out."""
        bundled, recorded = [], []
        for source, into in (("bundled", bundled), ("recorded", recorded)):
            for walk_id, path in self._files(source, owner):
                try:
                    walk = self.load(walk_id, owner)
                except WalkError:
                    continue
                into.append(WalkInfo(walk_id, walk.title, walk.recorded_at, len(walk.steps)))
        recorded.sort(key=lambda info: info.recorded_at, reverse=True)
        return bundled + recorded

    def save(self, walk: Walk, owner: str) -> str:
        """Write ``walk`` as one of ``owner``'s recordings (atomically); returns its id."""
        if not owner:
            raise WalkError("Saving a walk needs this browser's identity; reload the page and try again.").keyed(
                "replay.error.no_owner")
        if not walk.steps:
            raise WalkError("Nothing was recorded yet: turn on Record, show some results, then save.").keyed(
                "replay.error.nothing_recorded")
        data = walk_json_bytes(checked_walk(walk))
        folder = self.recorded_dir / owner_folder(owner)
        with self._lock:
            count = len(self._files("recorded", owner))
            if count >= self.per_owner:
                raise WalkError(f"You have {count} saved walks, the most one person may keep; delete one first."
                                ).keyed("replay.error.too_many", count=count)
            folder.mkdir(parents=True, exist_ok=True)
            stamp = walk.recorded_at[:19].replace("-", "").replace(":", "").replace("T", "-").lower()
            name = f"{re.sub(r'[^0-9a-z-]', '', stamp)[:15]}-{secrets.token_hex(3)}"
            atomic_write_text(folder / f"{name}.json", data.decode("utf-8"), "the walk")
        return f"recorded:{name}"

    def delete(self, walk_id: str, owner: str) -> None:
        """Remove one of ``owner``'s recorded walks (bundled ones stay)."""
        source, _ = parse_walk_id(walk_id)
        if source != "recorded":
            raise WalkError("A walk that comes with the app cannot be deleted.").keyed("replay.error.bundled")
        path = self._path(walk_id, owner)
        try:
            path.unlink()
        except FileNotFoundError:
            raise _no_walk(walk_id) from None


# ------------------------------------------------------------------------------ the recording in progress


@dataclass(frozen=True)
class RecordingStatus:
    recording: bool
    steps: int
    size: int  # bytes the steps take
    full: bool  # a step was refused: the recording reached its step or byte budget


@dataclass
class _Recording:
    started_at: str
    touched: float
    recording: bool = True
    full: bool = False
    language: str = ""
    steps: list[WalkStep] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    keys: dict[str, int] = field(default_factory=dict)  # a step that replaces itself (a run's latest poll)


class WalkRecorder:
    """Each browser session's recording: steps added while it records, within ``max_steps`` and ``max_bytes``,
    for at most ``max_sessions`` sessions (the one unused longest is forgotten first). Thread-safe."""

    def __init__(self, max_sessions: int = 32, max_steps: int = MAX_STEPS, max_bytes: int = MAX_FILE_BYTES - 50_000,
                 clock: Callable[[], float] = time.monotonic, now_text: Callable[[], str] = utc_now_text) -> None:
        self.max_sessions = max_sessions
        self.max_steps = max_steps
        self.max_bytes = max_bytes
        self._clock = clock
        self._now_text = now_text
        self._lock = threading.Lock()
        self._sessions: dict[str, _Recording] = {}

    def _status(self, recording: _Recording | None) -> RecordingStatus:
        if recording is None:
            return RecordingStatus(False, 0, 0, False)
        return RecordingStatus(recording.recording, len(recording.steps), sum(recording.sizes), recording.full)

    def set_recording(self, session: str, on: bool) -> RecordingStatus:
        """Start (or go on with) the session's recording, or pause it (its steps stay until saved or cleared)."""
        with self._lock:
            recording = self._sessions.get(session)
            if on and recording is None:
                if len(self._sessions) >= self.max_sessions:
                    oldest = min(self._sessions, key=lambda key: self._sessions[key].touched)
                    del self._sessions[oldest]
                recording = self._sessions[session] = _Recording(self._now_text(), self._clock())
            if recording is not None:
                recording.recording = bool(on)
                recording.touched = self._clock()
            return self._status(recording)

    def is_recording(self, session: str) -> bool:
        with self._lock:
            recording = self._sessions.get(session)
            return recording is not None and recording.recording

    def status(self, session: str) -> RecordingStatus:
        with self._lock:
            return self._status(self._sessions.get(session))

    def add(self, session: str, step: WalkStep, key: str = "", language: str = "") -> RecordingStatus:
        """Append ``step`` to the session's recording (or replace the step recorded under ``key``); nothing when
        the session is not recording; refused, and the recording marked full, past its budgets."""
        size = step_size(step)
        with self._lock:
            recording = self._sessions.get(session)
            if recording is None or not recording.recording:
                return self._status(recording)
            recording.touched = self._clock()
            index = recording.keys.get(key) if key else None
            others = sum(recording.sizes) - (recording.sizes[index] if index is not None else 0)
            if others + size > self.max_bytes or (index is None and len(recording.steps) >= self.max_steps):
                recording.full = True
                return self._status(recording)
            if index is not None:
                recording.steps[index], recording.sizes[index] = step, size
            else:
                recording.steps.append(step)
                recording.sizes.append(size)
                if key:
                    recording.keys[key] = len(recording.steps) - 1
            recording.language = recording.language or language
            return self._status(recording)

    def take(self, session: str, title: str, app_version: str = "", models: Iterable[str] = ()) -> Walk:
        """The session's recording as a walk (nothing is cleared: see :meth:`clear`, once it is saved)."""
        with self._lock:
            recording = self._sessions.get(session)
            steps = tuple(recording.steps) if recording else ()
            started = recording.started_at if recording else self._now_text()
            language = (recording.language if recording else "") or "en"
        return Walk(title=clip(title.strip(), MAX_TITLE_CHARS), recorded_at=started, steps=steps, language=language,
                    app_version=app_version, models=tuple(models)[:MAX_MODELS])

    def clear(self, session: str) -> RecordingStatus:
        """Forget the session's steps; a recording that was on stays on, from a fresh start."""
        with self._lock:
            recording = self._sessions.get(session)
            if recording is None:
                return self._status(None)
            self._sessions[session] = _Recording(self._now_text(), self._clock(), recording=recording.recording)
            return self._status(self._sessions[session])
