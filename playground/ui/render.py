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


# ------------------------------------------------------------------------------ SVG charts (loss curve, lengths)
# Drawn here rather than by a plotting component: every point shows (a series of one point is a dot, not an
# empty frame), step ticks are whole numbers, the y range has room around a flat curve, and the legend is
# HTML under the chart, so it wraps on a phone instead of being cut off.

CHART_COLOURS = ("#4f46e5", "#f97316", "#10b981", "#e11d48", "#0ea5e9")
_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 640, 280, 64, 16, 14, 46


def nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """About ``count`` round tick values covering [low, high] (whole numbers when ``integer``)."""
    import math

    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0]
    if high < low:
        low, high = high, low
    if high == low:
        pad = abs(high) * 0.05 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1, round(step)) if step >= 1 else 1
    start = math.floor(low / step) * step
    ticks, value = [], start
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high - step * 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _tick_label(value: float, step: float, integer: bool) -> str:
    if integer or float(value).is_integer() and step >= 1:
        return str(int(round(value)))
    import math

    decimals = max(0, min(4, -math.floor(math.log10(step)) + (0 if (step / 10 ** math.floor(math.log10(step))) in (1, 2, 5) else 1)))
    return f"{value:.{decimals}f}"


def _legend(names: Sequence[str], colours: Sequence[str]) -> str:
    items = "".join(f'<span class="chart-legend-item"><span class="chart-swatch" style="background:{c}"></span>'
                    f'{html.escape(n)}</span>' for n, c in zip(names, colours))
    return f'<div class="chart-legend" style="display:flex;flex-wrap:wrap;gap:4px 16px;font-size:0.9em">{items}</div>'


def _frame(x_ticks: Sequence[float], y_ticks: Sequence[float], x_of, y_of, x_integer: bool, x_title: str,
           y_title: str) -> list[str]:
    parts = []
    x_step = (x_ticks[1] - x_ticks[0]) if len(x_ticks) > 1 else 1.0
    y_step = (y_ticks[1] - y_ticks[0]) if len(y_ticks) > 1 else 1.0
    for value in y_ticks:
        y = y_of(value)
        parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                     f'<text class="chart-y-tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{_tick_label(value, y_step, False)}</text>')
    for value in x_ticks:
        x = x_of(value)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM + 4}" stroke="#6b7280"/>'
                     f'<text class="chart-x-tick" x="{x:.1f}" y="{_H - _BOTTOM + 17}" text-anchor="middle">'
                     f'{_tick_label(value, x_step, x_integer)}</text>')
    parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM}" stroke="#6b7280"/>')
    parts.append(f'<text x="{(_LEFT + _W - _RIGHT) / 2:.0f}" y="{_H - 6}" text-anchor="middle" '
                 f'class="chart-x-title">{html.escape(x_title)}</text>')
    parts.append(f'<text x="14" y="{(_TOP + _H - _BOTTOM) / 2:.0f}" text-anchor="middle" class="chart-y-title" '
                 f'transform="rotate(-90 14 {(_TOP + _H - _BOTTOM) / 2:.0f})">{html.escape(y_title)}</text>')
    return parts


def _svg(parts: Sequence[str], elem_class: str, title: str, legend: str, empty: str = "") -> str:
    title_html = f'<div class="chart-title" style="font-weight:600">{html.escape(title)}</div>' if title else ""
    body = (f'<svg class="chart-svg" viewBox="0 0 {_W} {_H}" width="100%" preserveAspectRatio="xMidYMid meet" '
            f'role="img" aria-label="{html.escape(title)}" style="font-size:12px;fill:currentColor;max-height:320px">'
            f'{"".join(parts)}</svg>') if parts else f'<div class="chart-empty">{html.escape(empty)}</div>'
    return f'<div class="chart {elem_class}" style="padding-top:26px">{title_html}{body}{legend}</div>'


def line_chart_html(series: Mapping[str, Sequence[tuple[float, float]]], *, title: str = "", x_title: str = "",
                    y_title: str = "", empty: str = "", integer_x: bool = True,
                    x_limits: tuple[float, float] | None = None, y_limits: tuple[float, float] | None = None) -> str:
    """Lines with a dot at every point, one per series (name -> [(x, y), ...]), with round ticks (whole numbers
    on x when ``integer_x``), a y range padded around the values, and an HTML legend of the series drawn.
    ``x_limits`` / ``y_limits`` widen the axes to a range the points may not reach yet, so a curve that is
    redrawn point by point (a replay) keeps still axes."""
    drawn = {name: sorted(points) for name, points in series.items() if points}
    if not drawn:
        return _svg([], "chart-line", title, "", empty)
    xs = [x for points in drawn.values() for x, _ in points] + list(x_limits or ())
    ys = [y for points in drawn.values() for _, y in points] + list(y_limits or ())
    x_low, x_high = min(xs), max(xs)
    if integer_x and x_high - x_low < 1:
        x_low, x_high = x_low - 1 if x_low >= 1 else x_low, x_high + 1
    x_ticks = nice_ticks(x_low, x_high, 6, integer=integer_x)
    spread = max(ys) - min(ys)
    pad = spread * 0.08 if spread else (abs(max(ys)) * 0.1 or 1.0)
    y_ticks = nice_ticks(min(ys) - pad, max(ys) + pad, 5)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def x_of(value):
        return _LEFT + (value - x0) / ((x1 - x0) or 1) * (_W - _LEFT - _RIGHT)

    def y_of(value):
        return _H - _BOTTOM - (value - y0) / ((y1 - y0) or 1) * (_H - _TOP - _BOTTOM)

    parts = _frame(x_ticks, y_ticks, x_of, y_of, integer_x, x_title, y_title)
    colours = []
    for index, (name, points) in enumerate(drawn.items()):
        colour = CHART_COLOURS[index % len(CHART_COLOURS)]
        colours.append(colour)
        path = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in points)
        parts.append(f'<g class="chart-series" data-series="{html.escape(name)}">')
        if len(points) > 1:
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2.5"/>')
        radius = 3.5 if len(points) <= 60 else 2
        for x, y in points:
            parts.append(f'<circle class="chart-point" cx="{x_of(x):.1f}" cy="{y_of(y):.1f}" r="{radius}" '
                         f'fill="{colour}"><title>{html.escape(name)}: {x:g} → {y:.4f}</title></circle>')
        parts.append("</g>")
    return _svg(parts, "chart-line", title, _legend(list(drawn), colours))


def histogram_html(bins: Sequence[tuple[float, float, float, str]], *, title: str = "", x_title: str = "",
                   y_title: str = "", marker: float | None = None, marker_label: str = "", empty: str = "") -> str:
    """Bars of (start, end, count, group) on a numeric x axis (whole-number ticks), coloured by group, with an
    optional dashed line at ``marker`` (max_length) and an HTML legend of the groups."""
    if not bins:
        return _svg([], "chart-bars", title, "", empty)
    low = min(b[0] for b in bins)
    high = max(b[1] for b in bins)
    if marker is not None:
        high = max(high, marker)
    x_ticks = nice_ticks(low, high, 6, integer=True)
    y_ticks = nice_ticks(0, max(b[2] for b in bins), 5, integer=True)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def x_of(value):
        return _LEFT + (value - x0) / ((x1 - x0) or 1) * (_W - _LEFT - _RIGHT)

    def y_of(value):
        return _H - _BOTTOM - (value - y0) / ((y1 - y0) or 1) * (_H - _TOP - _BOTTOM)

    parts = _frame(x_ticks, y_ticks, x_of, y_of, True, x_title, y_title)
    groups: list[str] = []
    for start, end, count, group in bins:
        if group not in groups:
            groups.append(group)
        colour = CHART_COLOURS[groups.index(group) % len(CHART_COLOURS)]
        left, right = x_of(start), x_of(end + 1)
        top = y_of(count)
        parts.append(f'<rect class="chart-bar" x="{left + 1:.1f}" y="{top:.1f}" width="{max(right - left - 2, 1):.1f}" '
                     f'height="{max(_H - _BOTTOM - top, 0):.1f}" fill="{colour}"><title>{int(start)}-{int(end)}: '
                     f'{int(count)}</title></rect>')
    colours = [CHART_COLOURS[i % len(CHART_COLOURS)] for i in range(len(groups))]
    if marker is not None:
        x = x_of(marker)
        parts.append(f'<line class="chart-marker" x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" y2="{_H - _BOTTOM}" '
                     f'stroke="#111827" stroke-dasharray="5 4"/>')
        groups, colours = [*groups, marker_label], [*colours, "#111827"]
    return _svg(parts, "chart-bars", title, _legend(groups, colours))
