"""Nothing cut off on a laptop (1366x768) or a phone (390x844), in a real browser: on every tab of the default
app, no dropdown hides part of its value, and no table cell breaks a word or a number across lines ('ran k',
'+0.9 5') or hides part of its text (a table too wide for its column scrolls sideways instead).

The page checks itself (``CHECK``); the Architectures tab is run once first, so its facts, similarity and
attention tables are there to check too. Screenshots of each tab go to test-artifacts/layout-*.png.
"""

from __future__ import annotations

import pytest

from tests.ui.test_browser import ARTIFACTS
from tests.ui.test_presenter_browser import walk_tabs

pytestmark = pytest.mark.browser

LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}

# Returns the problems found among the visible dropdown inputs and table cells, each a dict (where, text, why).
CHECK = r"""
() => {
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d');
  const problems = [];
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    return r.width > 2 && r.height > 2 && (!el.checkVisibility || el.checkVisibility({visibilityProperty: true}));
  };
  const where = (el) => {
    const owner = el.closest('[id]');
    return `${owner ? '#' + owner.id + ' ' : ''}${el.tagName.toLowerCase()}`;
  };
  // A dropdown's input shows its whole value: the text is no wider than the box it is typed in.
  for (const input of document.querySelectorAll('input[role="combobox"], .wrap-inner input')) {
    if (!visible(input) || !input.value) continue;
    const s = getComputedStyle(input);
    ctx.font = `${s.fontStyle} ${s.fontWeight} ${s.fontSize} ${s.fontFamily}`;
    const text = ctx.measureText(input.value).width;
    const room = input.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight);
    if (text > room + 1 || input.scrollWidth > input.clientWidth + 1) {
      problems.push({where: where(input), text: input.value.slice(0, 50),
                     why: `value ${Math.round(text)}px wide in a ${Math.round(room)}px box`});
    }
  }
  // A table cell keeps every word and number on one line and shows all of its text.
  for (const cell of document.querySelectorAll('td, th')) {
    if (!visible(cell) || cell.closest('.heatmap')) continue;
    if (getComputedStyle(cell).writingMode !== 'horizontal-tb') continue;
    for (const el of [cell, ...cell.querySelectorAll('*')]) {
      if (!visible(el)) continue;
      const s = getComputedStyle(el);
      const clips = s.overflowX !== 'visible' || s.textOverflow === 'ellipsis';
      if (clips && el.scrollWidth > el.clientWidth + 1 && el.innerText.trim()) {
        problems.push({where: where(el), text: el.innerText.trim().slice(0, 50),
                       why: `text cut off (${el.scrollWidth}px in ${el.clientWidth}px)`});
        break;
      }
    }
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (!visible(node.parentElement)) continue;
      // The pieces of text a line may not break inside: runs without spaces, split after a hyphen or a slash.
      for (const match of node.textContent.matchAll(/[^\s\-\/]+[\-\/]?/g)) {
        const range = document.createRange();
        range.setStart(node, match.index);
        range.setEnd(node, match.index + match[0].length);
        const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
        if (tops.size > 1) {
          problems.push({where: where(cell), text: match[0].slice(0, 50), why: `broken over ${tops.size} lines`});
        }
      }
    }
  }
  return problems;
}
"""


def test_no_table_cell_or_dropdown_is_cut_off_on_a_laptop_or_a_phone(browser, app_url):
    context = browser.new_context(viewport=LAPTOP, locale="en-US")
    try:
        page = context.new_page()
        page.goto(app_url)
        page.wait_for_selector("#arch-run", timeout=60_000)
        # Fill the Architectures tab's tables (facts, similarity, attention) once.
        page.click("#arch-run")
        page.wait_for_selector("#arch-attn-heatmap table", timeout=180_000)
        page.wait_for_timeout(500)
        ARTIFACTS.mkdir(exist_ok=True)
        problems: list[str] = []
        for label, viewport in (("laptop", LAPTOP), ("phone", PHONE)):
            page.set_viewport_size(viewport)
            page.wait_for_timeout(500)

            def check(name, label=label):
                page.screenshot(path=str(ARTIFACTS / f"layout-{label}-{name.split()[0].lower()}.png"), full_page=True)
                for p in page.evaluate(CHECK):
                    problems.append(f"[{label} {name}] {p['where']} {p['text']!r}: {p['why']}")

            walk_tabs(page, check)
        assert not problems, f"{len(problems)} cut-off texts:\n" + "\n".join(sorted(set(problems)))
    finally:
        context.close()
