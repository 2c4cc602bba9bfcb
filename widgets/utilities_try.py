"""The utilities panel's "Try it" tab: the LoRA at a few strengths, same prompt and seed, side by side.

The loaded base model is kept by a ``core.try_lora.LoraTryout`` between clicks while the base
model, its config and the device stay the same, so a second try starts at once.
"""
from __future__ import annotations

import io
from typing import Any

import ipywidgets as w

from widgets.base import button, labelled
from widgets.context import BASE_MODEL

SAMPLERS = ["euler_a", "euler", "dpmsolver++", "ddim", "heun", "lms", "pndm"]


class TryItSection:
    """Widgets: ``base_model``, ``model_config``, ``prompt``, ``negative``, ``strengths``, ``seed``, ``steps``,
    ``guidance``, ``sampler``, ``width``, ``height``, ``generate_button``, ``status``, ``image``."""

    def __init__(self, panel: Any) -> None:
        self.panel = panel
        self._tryout: Any = None
        wide = w.Layout(width="520px")
        self.base_model = w.Text(value=str(panel.context.get(BASE_MODEL) or ""),
                                 placeholder="base model file or diffusers folder (the one it was trained on)",
                                 layout=wide)
        self.model_config = w.Text(placeholder="optional: config folder for an offline single file", layout=wide)
        self.prompt = w.Textarea(placeholder="start with the trigger words (empty: the trigger words alone)",
                                 layout=w.Layout(width="520px", height="60px"))
        self.negative = w.Text(value="lowres, blurry, bad anatomy", layout=wide)
        self.strengths = w.Text(value="0, 0.5, 1", layout=w.Layout(width="200px"))
        self.seed = w.IntText(value=42, layout=w.Layout(width="120px"))
        self.steps = w.BoundedIntText(value=20, min=1, max=150, layout=w.Layout(width="120px"))
        self.guidance = w.BoundedFloatText(value=7.0, min=0.0, max=30.0, layout=w.Layout(width="120px"))
        self.sampler = w.Dropdown(options=SAMPLERS, value="euler_a", layout=w.Layout(width="160px"))
        self.width = w.BoundedIntText(value=0, min=0, max=4096, step=64, layout=w.Layout(width="120px"))
        self.height = w.BoundedIntText(value=0, min=0, max=4096, step=64, layout=w.Layout(width="120px"))
        self.generate_button = button("Generate", "primary", "Draw the LoRA at each strength", "image")
        self.status = w.Label("")
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.generate_button.on_click(panel.guarded(self._start))
        self.widget = w.VBox([
            w.HTML('<span class="lora-muted">Strength 0 is the base model alone; compare it with 0.5 and 1 to see '
                   'what the LoRA learned and how strong to use it. Same prompt and seed for every picture.</span>'),
            labelled("Base model", self.base_model), labelled("Model config", self.model_config),
            labelled("Prompt", self.prompt), labelled("Negative prompt", self.negative),
            labelled("Strengths", self.strengths),
            w.HBox([labelled("Seed", self.seed, "60px"), labelled("Steps", self.steps, "60px"),
                    labelled("CFG", self.guidance, "50px")]),
            w.HBox([labelled("Sampler", self.sampler, "60px"), labelled("Width", self.width, "60px"),
                    labelled("Height", self.height, "60px"),
                    w.HTML('<span class="lora-muted">&nbsp;0 = the model\'s size</span>')]),
            w.HBox([self.generate_button, self.status]), self.image,
        ])

    def _start(self, *_: Any) -> None:
        self.status.value = "loading the base model..." if self._tryout is None else "drawing..."
        self.panel.run_in_background(self.generate, self.generate_button)

    def generate(self) -> None:
        """Draw the grid (runs in the panel's worker) and show it; the status says "failed" on any error."""
        try:
            self._generate()
        except BaseException:
            self.status.value = "failed"
            raise

    def _generate(self) -> None:
        from core.try_lora import DEFAULT_STRENGTHS, LoraTryout, TryoutSettings, parse_strengths, prompt_for_lora

        lora = self.panel.lora_path.value.strip()
        values = list(parse_strengths(self.strengths.value, DEFAULT_STRENGTHS))
        prompt = prompt_for_lora(self.prompt.value, lora)
        key = (self.base_model.value.strip(), self.model_config.value.strip() or None)
        if self._tryout is None or (self._tryout.base_model, self._tryout.model_config) != key:
            self._tryout = LoraTryout(key[0], model_config=key[1])
        settings = TryoutSettings(prompt=prompt, negative_prompt=self.negative.value, seed=int(self.seed.value),
                                  steps=int(self.steps.value), guidance_scale=float(self.guidance.value),
                                  sampler=self.sampler.value, width=self.width.value or None,
                                  height=self.height.value or None)
        result = self._tryout.run(lora, settings, values, on_image=lambda i, s: self._drawn(i, len(values)))
        buffer = io.BytesIO()
        result.grid.save(buffer, format="PNG")
        self.image.value = buffer.getvalue()
        self.status.value = f"strengths {', '.join(f'{s:g}' for s in result.strengths)}, seed {settings.seed}"
        for warning in result.warnings:
            self.panel.messages.warning(warning)

    def _drawn(self, index: int, count: int) -> None:
        self.status.value = f"drew {index + 1} of {count}"
