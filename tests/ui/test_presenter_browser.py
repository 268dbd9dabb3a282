"""Presenter mode on a 1920x1080 projector, in a real browser: every text a room reads is at least 24 px (code
20 px) and meets WCAG AA contrast against what is behind it (4.5:1, or 3:1 for large text), on every tab.

The page measures itself (``MEASURE``): each visible element with text of its own (labels, help text, inputs and
their placeholders, textareas, markdown, tables, dropdown values, buttons, tab buttons, code) gives its computed
font size, its colour and the colour behind it (its ancestors' backgrounds, layered, over white), and the test
lists every element below the bar. Screenshots of each tab go to test-artifacts/presenter-*.png.
"""

from __future__ import annotations

import pytest

from playground.config import Settings
from tests.ui.conftest import _free_port, launched
from tests.ui.test_browser import ARTIFACTS

pytestmark = pytest.mark.browser

PROJECTOR = {"width": 1920, "height": 1080}
MIN_TEXT_PX = 24
MIN_CODE_PX = 20

# One argument: {minText, minCode}. Returns the offenders, each a dict that says where, what, and why.
MEASURE = r"""
({minText, minCode}) => {
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 1;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const rgba = (css) => {  // any CSS colour (rgb, oklch, color-mix...) as [r, g, b, a] through the canvas
    ctx.clearRect(0, 0, 1, 1);
    ctx.fillStyle = 'rgba(0,0,0,0)';
    ctx.fillStyle = css;
    ctx.fillRect(0, 0, 1, 1);
    const d = ctx.getImageData(0, 0, 1, 1).data;
    return [d[0], d[1], d[2], d[3] / 255];
  };
  const over = (top, below) => {  // top (with alpha) composited over an opaque colour
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + below[i] * (1 - a)).concat([1]);
  };
  const luminance = (c) => {
    const [r, g, b] = c.slice(0, 3).map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (a, b) => {
    const [l1, l2] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (l1 + 0.05) / (l2 + 0.05);
  };
  // The colours that may be behind an element: its own and its ancestors' background colours, layered from the
  // page's white up; a gradient anywhere on the way counts with each of its colours (the worst one is kept).
  const backgrounds = (el) => {
    const layers = [];
    for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
      const s = getComputedStyle(e);
      const image = s.backgroundImage || '';
      const stops = image.includes('gradient') ? (image.match(/(rgba?|oklch|oklab|lab|lch|color)\([^)]*\)/g) || []) : [];
      const colour = rgba(s.backgroundColor);
      layers.push({colour, stops: stops.map(rgba)});
      if (colour[3] >= 0.999 && !stops.length) break;
    }
    let candidates = [[255, 255, 255, 1]];
    for (const layer of layers.reverse()) {
      candidates = candidates.map(c => over(layer.colour, c));
      if (layer.stops.length) candidates = layer.stops.flatMap(stop => candidates.map(c => over(stop, c)));
    }
    return candidates;
  };
  const opacity = (el) => {
    let o = 1;
    for (let e = el; e && e.nodeType === 1; e = e.parentElement) o *= parseFloat(getComputedStyle(e).opacity || '1');
    return o;
  };
  const visible = (el) => {
    if (el.closest('footer, [aria-hidden="true"], .hide, .hidden, template, svg, noscript')) return false;
    const r = el.getBoundingClientRect();
    if (r.width <= 2 || r.height <= 2) return false;
    const s = getComputedStyle(el);
    if (s.visibility !== 'visible' || parseFloat(s.fontSize) === 0) return false;
    // Clipped out of sight (screen-reader text) or scrolled away inside a closed box.
    if (s.clip && s.clip !== 'auto') return false;
    return el.checkVisibility ? el.checkVisibility({opacityProperty: true, visibilityProperty: true}) : true;
  };
  const where = (el) => {
    const owner = el.closest('[id]');
    const cls = (el.className && typeof el.className === 'string') ? '.' + el.className.trim().split(/\s+/).slice(0, 2).join('.') : '';
    return `${owner ? '#' + owner.id + ' ' : ''}${el.tagName.toLowerCase()}${cls}`;
  };
  const isCode = (el, s) => !!el.closest('code, pre, kbd, samp, .cm-editor, .tok-text') || /mono/i.test(s.fontFamily);
  const offenders = [];
  const check = (el, text, s, colour) => {
    const size = parseFloat(s.fontSize);
    const code = isCode(el, s);
    const min = code ? minCode : minText;
    const large = size >= 24 || (size >= 18.66 && parseInt(s.fontWeight, 10) >= 700);
    const need = large ? 3 : 4.5;
    const fg = rgba(colour);
    fg[3] *= opacity(el);
    const disabled = !!el.closest(':disabled, [disabled], [aria-disabled="true"]');
    let worst = Infinity;
    if (!disabled) for (const bg of backgrounds(el)) worst = Math.min(worst, ratio(over(fg, bg), bg));
    const problems = [];
    if (size + 0.05 < min) problems.push(`${size.toFixed(1)}px < ${min}px`);
    if (worst + 0.005 < need) problems.push(`contrast ${worst.toFixed(2)} < ${need}`);
    if (problems.length) offenders.push({where: where(el), text: text.trim().slice(0, 40), problems: problems.join(', ')});
  };
  const root = document.querySelector('gradio-app') || document.body;
  for (const el of root.querySelectorAll('*')) {
    if (!visible(el)) continue;
    const tag = el.tagName;
    if (tag === 'INPUT' || tag === 'TEXTAREA') {
      const type = (el.getAttribute('type') || 'text').toLowerCase();
      if (!['text', 'number', 'search', 'email', 'url', 'password'].includes(type) && tag === 'INPUT') continue;
      const s = getComputedStyle(el);
      if (el.value) check(el, el.value, s, s.color);
      else if (el.placeholder) check(el, el.placeholder, getComputedStyle(el, '::placeholder'), getComputedStyle(el, '::placeholder').color);
      continue;
    }
    if (['SCRIPT', 'STYLE', 'OPTION', 'SELECT'].includes(tag)) continue;
    const own = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
    if (!own) continue;
    const s = getComputedStyle(el);
    check(el, own, s, s.color);
  }
  return offenders;
}
"""

# Opens every closed accordion of the tab on show (their contents are what a presenter opens on stage).
OPEN_ACCORDIONS = r"""
() => {
  let opened = 0;
  for (const button of document.querySelectorAll('button.label-wrap')) {
    if (!button.checkVisibility || !button.checkVisibility()) continue;
    if (!button.classList.contains('open')) { button.click(); opened += 1; }
  }
  return opened;
}
"""


@pytest.fixture(scope="module")
def presenter_url(app_services):
    """The app in presenter mode, over the session's data dir (its converted models are reused)."""
    from playground.services import Services

    base = app_services.settings
    settings = Settings.load([], {
        "PLAYGROUND_DATA_DIR": str(base.data_dir), "PLAYGROUND_OFFLINE": "1", "PLAYGROUND_HOST": "127.0.0.1",
        "PLAYGROUND_PORT": str(_free_port()), "PLAYGROUND_MODE": "presenter",
    })
    services = Services.create(settings)
    try:
        with launched(services) as url:
            yield url
    finally:
        services.close()


def walk_tabs(page, on_tab):
    """Clicks every tab in order, opens its accordions, and calls ``on_tab(name)`` on each."""
    buttons = page.locator("#main-tabs [role=tab]")
    for index in range(buttons.count()):
        button = buttons.nth(index)
        name = button.inner_text().strip()
        button.click()
        page.wait_for_timeout(300)
        if page.evaluate(OPEN_ACCORDIONS):
            page.wait_for_timeout(300)
        on_tab(name)


def test_presenter_text_is_large_and_contrasted_on_every_tab(browser, presenter_url):
    context = browser.new_context(viewport=PROJECTOR, locale="en-US")
    try:
        page = context.new_page()
        page.goto(presenter_url)
        page.wait_for_selector("#arch-run", timeout=60_000)
        page.wait_for_timeout(500)
        ARTIFACTS.mkdir(exist_ok=True)
        offenders: list[str] = []

        def measure(name):
            page.screenshot(path=str(ARTIFACTS / f"presenter-{name.split()[0].lower()}.png"), full_page=True)
            for o in page.evaluate(MEASURE, {"minText": MIN_TEXT_PX, "minCode": MIN_CODE_PX}):
                offenders.append(f"[{name}] {o['where']} {o['text']!r}: {o['problems']}")

        walk_tabs(page, measure)
        assert page.locator("#main-tabs [role=tab]").count() == 9  # eight tabs (Prompt search and Arena among them) and Replay
        assert not offenders, f"{len(offenders)} texts too small or too faint for a projector:\n" + "\n".join(
            sorted(set(offenders)))
    finally:
        context.close()
