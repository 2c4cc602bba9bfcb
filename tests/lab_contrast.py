"""Measure how readable the panels' text is in the page: the WCAG contrast ratio of every piece of text.

For each visible element inside a rendered panel that holds text of its own (and each input showing a
value), the page computes the text colour and the colour actually behind it: walking up the ancestors
to the first opaque background and laying every translucent background between over it (as the browser
paints them). A translucent text colour is laid over that background too. The ratio follows WCAG 2:
(L1 + 0.05) / (L2 + 0.05) of the relative luminances; body text wants 4.5, large text (24 px, or
18.66 px bold) wants 3.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

BODY_MINIMUM = 4.5
LARGE_MINIMUM = 3.0

# Runs in the page with the panel selector; returns one record per piece of text.
_MEASURE_JS = r"""
(root) => {
  const parse = (text) => {
    let m = text.match(/^rgba?\(([^)]*)\)$/);
    if (m) {
      const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
      return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
    }
    m = text.match(/^color\(srgb ([^)]*)\)$/);  // how Chromium writes color-mix() results
    if (m) {
      const p = m[1].split(/[\s\/]+/).filter(Boolean).map(Number);
      return [p[0] * 255, p[1] * 255, p[2] * 255, p.length > 3 ? p[3] : 1];
    }
    return null;
  };
  const over = (top, bottom) => [0, 1, 2].map(i => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
  const behind = (element) => {
    const layers = [];  // innermost first
    let opaque = false;
    for (let node = element; node; node = node.parentElement) {
      const colour = parse(getComputedStyle(node).backgroundColor);
      if (colour && colour[3] > 0) {
        layers.push(colour);
        if (colour[3] >= 1) { opaque = true; break; }
      }
    }
    let base = opaque ? layers.pop() : [255, 255, 255, 1];  // nothing opaque: the white page canvas
    for (let i = layers.length - 1; i >= 0; i--) base = over(layers[i], base);
    return [base, opaque];
  };
  const luminance = (c) => {
    const [r, g, b] = c.slice(0, 3).map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (a, b) => {
    const [high, low] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (high + 0.05) / (low + 0.05);
  };
  const category = (element) => {
    if (element.matches('.lora-panel h3, .lora-panel h3 *')) return 'title';
    if (element.closest('.lora-msg')) return 'message';
    if (element.closest('button')) return 'button';
    if (element.matches('input, select, textarea')) return 'input';
    if (element.closest('.lora-help, .lora-muted, .lora-hint')) return 'help';
    if (element.closest('.widget-label, .widget-label-basic, label')) return 'label';
    return 'other';
  };
  const ownText = (element) => {
    if (element.matches('input, select, textarea')) {
      if (element.type === 'checkbox' || element.type === 'range') return '';
      return element.matches('select') ? (element.selectedOptions[0] || {}).text || '' : element.value;
    }
    return Array.from(element.childNodes).filter(n => n.nodeType === Node.TEXT_NODE)
      .map(n => n.textContent).join('').trim();
  };
  const found = [];
  for (const panel of document.querySelectorAll(root + ' .lora-panel')) {
    for (const element of panel.querySelectorAll('*')) {
      const text = ownText(element);
      if (!text || !text.trim() || element.getClientRects().length === 0) continue;
      const style = getComputedStyle(element);
      if (style.visibility !== 'visible') continue;
      const [background, opaque] = behind(element);
      const colour = over(parse(style.color) || [0, 0, 0, 1], background);
      const size = parseFloat(style.fontSize);
      const bold = parseInt(style.fontWeight, 10) >= 700;
      found.push({
        category: category(element), text: text.trim().slice(0, 80), ratio: ratio(colour, background),
        colour: style.color, background: background.slice(0, 3).map(Math.round).join(','),
        large: size >= 24 || (bold && size >= 18.66), opaque: opaque,
        disabled: Boolean(element.closest(':disabled, .mod-disabled')),
      });
    }
  }
  return found;
}
"""


@dataclass(frozen=True)
class TextContrast:
    """One piece of text in a panel and how well it stands out from what is behind it."""

    category: str  # title, message, help, label, input, button or other
    text: str
    ratio: float
    colour: str  # the computed CSS colour of the text
    background: str  # "r,g,b" of the background it is painted on
    large: bool  # WCAG large text: 3:1 is enough
    opaque: bool  # an opaque background was found among its ancestors
    disabled: bool  # part of a disabled control (WCAG asks no contrast of those)

    @property
    def minimum(self) -> float:
        """The ratio WCAG 2 (level AA) asks of this text."""
        return LARGE_MINIMUM if self.large else BODY_MINIMUM


def measure_text_contrast(page: Any, root: str) -> list[TextContrast]:
    """Every visible piece of text in the panels under the CSS selector ``root``, with its contrast ratio."""
    return [TextContrast(**item) for item in page.evaluate(_MEASURE_JS, root)]


def too_faint(measured: Iterable[TextContrast]) -> list[TextContrast]:
    """The enabled texts whose ratio is under what WCAG asks of them."""
    return [item for item in measured if not item.disabled and item.ratio < item.minimum]


def lowest_by_category(measured: Iterable[TextContrast]) -> dict[str, float]:
    """The lowest ratio of each category (enabled texts only), rounded for a report."""
    lowest: dict[str, float] = {}
    for item in measured:
        if not item.disabled:
            lowest[item.category] = round(min(item.ratio, lowest.get(item.category, item.ratio)), 2)
    return lowest


def contrast_ratio(first: tuple[float, float, float], second: tuple[float, float, float]) -> float:
    """WCAG 2 contrast ratio of two opaque sRGB colours given as 0-1 floats (the page's formula, in Python)."""

    def luminance(colour: tuple[float, float, float]) -> float:
        linear = [value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4 for value in colour]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)
