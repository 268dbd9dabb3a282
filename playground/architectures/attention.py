"""Real attention weights for the user's text, extracted once and viewed per layer and head.

:func:`extract_attention` runs the model once with ``output_attentions=True`` (models are loaded
with eager attention for this) and keeps every layer and head as float32 arrays in an
:class:`AttentionMaps`. :meth:`AttentionMaps.view` then cuts one :class:`AttentionView`
(a layer, a head or the mean of the heads) without running the model again; the
:class:`~playground.architectures.lab.ArchitectureLab` caches the maps per
``(model, text, target, window)`` so moving the layer and head sliders is instant.

Kinds of attention (``AttentionMaps.kinds``):

- encoder and decoder models: ``"self"`` (rows: queries, columns: keys, both the input tokens);
- encoder-decoder models: ``"encoder"`` (input x input), ``"decoder"`` (output x output, causal) and
  ``"cross"`` (output x input). The output side is a *target*: the text given, else the model's own
  greedy output; the decoder reads it shifted right (it starts with the decoder start token), so
  row ``i`` is the step that predicts target token ``i``.

A heatmap stays readable up to about 64 tokens: longer inputs are windowed to ``max_tokens``
tokens from ``window_start`` (the model reads the tokens up to the end of the window) and the
``note`` says which tokens are shown. In a window that does not start at 0 the rows do not sum to
1: the attention paid to earlier tokens is not drawn.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from playground.architectures.loading import LoadedModel
from playground.architectures.text import check_text
from playground.architectures.tokens import encode, pieces
from playground.errors import InvalidInputError

DEFAULT_MAX_TOKENS = 64
MAX_WINDOW = 256  # the most tokens one extraction keeps (memory grows with its square)
MAX_TARGET_TOKENS = 24  # greedy output generated as the target of an encoder-decoder


@dataclass(frozen=True)
class AttentionView:
    """One heatmap: ``weights[row][col]`` is how much query ``rows[row]`` attends to key ``cols[col]``."""

    model_id: str
    kind: str  # "self", "encoder", "decoder" or "cross"
    layer: int
    head: int | None  # None: the mean over the heads
    rows: tuple[str, ...]
    cols: tuple[str, ...]
    weights: tuple[tuple[float, ...], ...]
    note: str = ""


@dataclass(frozen=True, eq=False)
class AttentionMaps:
    """Every layer and head of one forward pass; ``maps[kind]`` has shape (layers, heads, rows, cols)."""

    model_id: str
    family: str
    kinds: tuple[str, ...]
    tokens: tuple[str, ...]  # labels of the input tokens in the window
    target_tokens: tuple[str, ...]  # labels of the decoder's input tokens (encoder-decoder), else ()
    target: str  # the decoder's target text (encoder-decoder), else ""
    window: tuple[int, int]  # [start, end) of the input tokens shown
    total_tokens: int  # input tokens the model could read (after truncation to its context)
    maps: dict[str, Any] = field(repr=False)  # kind -> numpy float32 array
    note: str = ""

    def layers(self, kind: str | None = None) -> int:
        return int(self.maps[kind or self.kinds[0]].shape[0])

    def heads(self, kind: str | None = None) -> int:
        return int(self.maps[kind or self.kinds[0]].shape[1])

    def shape(self, kind: str | None = None) -> tuple[int, int, int, int]:
        return tuple(int(d) for d in self.maps[kind or self.kinds[0]].shape)  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.maps.values()))

    def view(self, kind: str | None = None, layer: int = 0, head: int | None = None) -> AttentionView:
        """The heatmap of one layer and one head (``head=None``: the mean over the heads)."""
        kind = kind or self.kinds[0]
        if kind not in self.maps:
            raise InvalidInputError(
                f"{self.model_id} has no {kind!r} attention; choose one of {', '.join(self.kinds)}.")
        array = self.maps[kind]
        layers, heads = array.shape[:2]
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < layers:
            raise InvalidInputError(f"Layer {layer!r} does not exist: choose 0 to {layers - 1}.")
        if head is not None and (isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < heads):
            raise InvalidInputError(f"Head {head!r} does not exist: choose 0 to {heads - 1}, or the mean of all.")
        matrix = array[layer].mean(axis=0) if head is None else array[layer, head]
        rows = self.target_tokens if kind in ("decoder", "cross") else self.tokens
        cols = self.target_tokens if kind == "decoder" else self.tokens
        weights = tuple(tuple(round(float(v), 5) for v in row) for row in matrix)
        return AttentionView(self.model_id, kind, layer, head, rows, cols, weights, self.note)


def _to_numpy(attentions, rows: slice, cols: slice):
    import torch

    stacked = torch.stack([a[0, :, rows, cols] for a in attentions])  # (layers, heads, rows, cols)
    return stacked.float().cpu().numpy().copy()


def _accepts(model, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def extract_attention(loaded: LoadedModel, text: str, target: str | None = None,
                      max_tokens: int = DEFAULT_MAX_TOKENS, window_start: int = 0) -> AttentionMaps:
    """Run ``loaded`` once on ``text`` and keep its attention weights (see the module docstring)."""
    import torch

    check_text(text)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_WINDOW:
        raise InvalidInputError(f"Show between 1 and {MAX_WINDOW} tokens, not {max_tokens!r}.")
    encoded = encode(loaded, text, keep="start")
    ids = list(encoded.ids)
    total = len(ids)
    if isinstance(window_start, bool) or not isinstance(window_start, int) or not 0 <= window_start < total:
        raise InvalidInputError(f"The window must start between token 0 and {total - 1}, not {window_start!r}.")
    start, end = window_start, min(total, window_start + max_tokens)
    notes = [encoded.note] if encoded.note else []
    if (start, end) != (0, total):
        notes.append(f"Showing tokens {start} to {end - 1} of {total}: a heatmap stays readable up to {max_tokens} "
                     f"tokens{'' if start == 0 else '; attention to tokens before the window is not drawn'}.")
    labels = tuple(p.label for p in pieces(loaded, ids[start:end], start))
    model = loaded.model
    device = loaded.device
    window = slice(start, end)
    input_ids = torch.tensor([ids[:end]], device=device)
    with torch.inference_mode():
        if loaded.family != "encoder-decoder":
            kwargs: dict[str, Any] = dict(input_ids=input_ids, output_attentions=True)
            if loaded.head == "causal_lm" and _accepts(model, "logits_to_keep"):
                kwargs["logits_to_keep"] = 1  # the vocabulary projection of every position is not needed
            out = model(**kwargs)
            maps = {"self": _to_numpy(out.attentions, window, window)}
            return AttentionMaps(loaded.model_id, loaded.family, ("self",), labels, (), "", (start, end), total,
                                 maps, " ".join(notes))
        tokenizer = loaded.tokenizer
        decoder_start = model.config.decoder_start_token_id
        if decoder_start is None:
            decoder_start = tokenizer.pad_token_id
        if target is None:
            generated = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                       max_new_tokens=min(MAX_TARGET_TOKENS, max_tokens), do_sample=False)[0].tolist()
            target_ids = generated[1:]
            target = tokenizer.decode(target_ids, skip_special_tokens=True).strip()
            notes.append("The decoder side is the model's own greedy output.")
        else:
            check_text(target, what="target")
            target_ids = list(tokenizer(target)["input_ids"])
        decoder_ids = [decoder_start, *target_ids[:-1]] if target_ids else [decoder_start]
        if len(decoder_ids) > max_tokens:
            notes.append(f"Only the first {max_tokens} of {len(decoder_ids)} output tokens are shown.")
            decoder_ids = decoder_ids[:max_tokens]
        out = model(input_ids=input_ids, decoder_input_ids=torch.tensor([decoder_ids], device=device),
                    output_attentions=True)
        everything = slice(None)
        maps = {
            "encoder": _to_numpy(out.encoder_attentions, window, window),
            "decoder": _to_numpy(out.decoder_attentions, everything, everything),
            "cross": _to_numpy(out.cross_attentions, everything, window),
        }
    target_labels = tuple(p.label for p in pieces(loaded, decoder_ids))
    return AttentionMaps(loaded.model_id, loaded.family, ("encoder", "decoder", "cross"), labels, target_labels,
                         target, (start, end), total, maps, " ".join(notes))
