"""One look for every panel: spacing and the ok / warning / error colours.

Colours come from JupyterLab's own theme variables, so the panels read well in the light and
the dark theme alike; the fallbacks after each variable serve the classic notebook and VS Code.
Message boxes are tinted with a translucent colour laid over the page rather than with the theme's
``--jp-*-color3``: those are pale pastels in both themes, under which the dark theme's white text
could not be read. ``tests/test_browser.py`` measures the contrast of every text in both themes.
"""
from __future__ import annotations

import html

OK, INFO, WARNING, ERROR = "ok", "info", "warning", "error"
LEVELS = (OK, INFO, WARNING, ERROR)

# Injected once per panel root (cheap, and idempotent in the browser: same rules, same values).
CSS = """
<style>
.lora-panel { padding: 8px 10px; border: 1px solid var(--jp-border-color2, #ccc); border-radius: 6px;
  margin: 6px 0; }
.lora-panel h3 { margin: 2px 0 8px 0; font-size: 1.15em; }
.lora-section { margin: 6px 0 10px 0; }
.lora-muted { color: var(--jp-ui-font-color2, #666); font-size: 0.92em; }
.lora-msg { padding: 4px 8px; border-radius: 4px; margin: 3px 0; border-left: 4px solid; }
.lora-ok { border-color: var(--jp-success-color1, #388e3c); background: rgba(56,142,60,.12); }
.lora-info { border-color: var(--jp-info-color1, #0288d1); background: rgba(2,136,209,.10); }
.lora-warning { border-color: var(--jp-warn-color1, #f57c00); background: rgba(245,124,0,.12); }
.lora-error { border-color: var(--jp-error-color1, #d32f2f); background: rgba(211,47,47,.12); }
.lora-hint { display: block; margin-top: 2px; }
/* ipywidgets draws the tabs not on show and closed accordion groups in --jp-ui-font-color2 on a grey:
   under 4.5:1 in both themes. */
.lora-panel .jupyter-widgets.jupyter-widget-tab > .lm-TabBar .lm-TabBar-tab:not(.lm-mod-current),
.lora-panel .jupyter-widget-Collapse-header { color: var(--jp-ui-font-color1, #222); }
/* Light theme: ipywidgets' white text on its orange, cyan and green buttons is 2.7-4.1:1; dark text
   reads (as the dark theme already does it). */
body[data-jp-theme-light="true"] .lora-panel .jupyter-button.mod-warning,
body[data-jp-theme-light="true"] .lora-panel .jupyter-button.mod-info,
body[data-jp-theme-light="true"] .lora-panel .jupyter-button.mod-success { color: var(--jp-ui-font-color0, #000); }
.lora-help { color: var(--jp-ui-font-color1, #222); background: var(--jp-layout-color2, #f4f4f4);
  padding: 6px 10px; border-radius: 4px; }
.lora-mono { font-family: var(--jp-code-font-family, monospace); white-space: pre; overflow-x: auto; }
</style>
"""

ICONS = {OK: "✔", INFO: "ℹ", WARNING: "⚠", ERROR: "✖"}


def message_html(level: str, message: str, hint: str = "") -> str:
    """One coloured message line (escaped), with an optional "what to do" line under it."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}")
    body = f"{ICONS[level]} {html.escape(message)}"
    if hint:
        body += f'<span class="lora-hint">What to do: {html.escape(hint)}</span>'
    return f'<div class="lora-msg lora-{level}">{body}</div>'


def messages_html(items: list[tuple[str, str, str]]) -> str:
    """Several ``(level, message, hint)`` lines."""
    return "".join(message_html(level, message, hint) for level, message, hint in items)
