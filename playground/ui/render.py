"""Turn result dataclasses into what Gradio components display: HTML heatmaps, highlighted tokens, tables.

Heatmaps are plain HTML tables with coloured cells: crisp on a projector,
readable token labels on both axes, and no plotting library to install.
"""

from __future__ import annotations

import html
import re
from typing import Mapping, Sequence

MAX_LABEL = 12
# Characters Markdown reads as formatting inside a line (emphasis, code, links, tables, strikethrough, LaTeX);
# HTML's own characters become entities first.
_MARKDOWN = re.compile(r"([\\`*_\[\]|~$])")


def md_escape(text: str) -> str:
    """``text`` shown as it is inside Markdown: HTML characters as entities (so a special token such as
    ``</s>`` stays visible) and Markdown's formatting characters backslash-escaped (so ``**`` or ``_`` in a
    model's output is not read as bold or italics)."""
    return _MARKDOWN.sub(r"\\\1", html.escape(str(text), quote=False))


def table_html(headers: Sequence[str], rows: Sequence[Sequence[str]], css_class: str = "",
               numeric: Sequence[int] = ()) -> str:
    """A small HTML table (escaped); the columns in ``numeric`` are right-aligned and never wrap, so a narrow
    column shows "0.95", not "0.9" over "5"."""
    def cell(tag: str, index: int, value) -> str:
        cls = ' class="num"' if index in numeric else ""
        return f"<{tag}{cls}>{html.escape(str(value))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    cls = f' class="{html.escape(css_class)}"' if css_class else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _label(token: str) -> str:
    token = token if len(token) <= MAX_LABEL else token[: MAX_LABEL - 1] + "…"
    return html.escape(token)


def heatmap_html(rows: Sequence[str], cols: Sequence[str], weights: Sequence[Sequence[float]], title: str = "",
                 caption: str = "", binary: bool = False) -> str:
    """An HTML table whose cell shade is the weight (0..1); row = query token, column = key token."""
    peak = max((max(r) for r in weights if len(r)), default=1.0) or 1.0
    head = "".join(f'<th class="hm-col"><span>{_label(c)}</span></th>' for c in cols)
    body = []
    for label, row in zip(rows, weights):
        cells = []
        for value in row:
            share = float(value) if binary else float(value) / peak
            tip = f"{float(value):.3f}"
            cells.append(f'<td title="{tip}" style="background: rgba(79, 70, 229, {share:.3f})"></td>')
        body.append(f'<tr><th class="hm-row">{_label(label)}</th>{"".join(cells)}</tr>')
    title_html = f'<div class="hm-title">{html.escape(title)}</div>' if title else ""
    caption_html = f'<div class="hm-caption">{html.escape(caption)}</div>' if caption else ""
    return (f'<div class="heatmap">{title_html}<table><thead><tr><th></th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>{caption_html}</div>')


ROLE_COLOURS = {
    "context": "#e5e7eb", "special": "#d1d5db", "masked": "#fca5a5", "random": "#fdba74", "unchanged": "#fde68a",
    "predicted": "#a5b4fc", "noise": "#86efac",
}


def token_chips_html(tokens: Sequence[tuple[str, int]], note: str = "") -> str:
    """Tokens as alternating coloured chips with their ids underneath, so token borders are visible."""
    chips = "".join(
        f'<span class="tok tok-{i % 2}"><span class="tok-text">{html.escape(text)}</span>'
        f'<span class="tok-id">{token_id}</span></span>' for i, (text, token_id) in enumerate(tokens))
    note_html = f'<div class="hm-caption">{html.escape(note)}</div>' if note else ""
    return f'<div class="tokens">{chips}</div>{note_html}'


def role_chips_html(tokens: Sequence[tuple[str, str, str]], legend: Mapping[str, str],
                    names: Mapping[str, str] | None = None) -> str:
    """(token, role, what is predicted) chips coloured by role, with a legend of the roles used: each role's
    name (``names``, e.g. translated; the role id when missing) and its ``legend`` description."""
    names = names or {}
    chips = []
    used = []
    for text, role, target in tokens:
        colour = ROLE_COLOURS.get(role, "#e5e7eb")
        if role not in used:
            used.append(role)
        tip = f' title="{html.escape(target)}"' if target else ""
        chips.append(f'<span class="tok" style="background:{colour}"{tip}><span class="tok-text">'
                     f'{html.escape(text)}</span></span>')
    keys = "".join(f'<span class="legend-item"><span class="swatch" style="background:{ROLE_COLOURS.get(r, "#eee")}">'
                   f'</span><b>{html.escape(names.get(r, r))}</b>: {html.escape(legend.get(r, ""))}</span>'
                   for r in used)
    return f'<div class="tokens">{"".join(chips)}</div><div class="legend">{keys}</div>'
