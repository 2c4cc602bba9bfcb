"""Sampler names (sd-scripts' ``sample_sampler`` values) to diffusers schedulers for preview images.

Every scheduler is built from the same noise schedule the model was trained with
(:data:`trainer.maths.SD_SCHEDULE`) and the model's prediction type, so a sample shows what the
LoRA really does, whichever sampler draws it. The ``k_`` names are sd-scripts' aliases of the
plain ones; both map to the same diffusers class.
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any

from trainer.errors import TrainerError
from trainer.maths import SD_SCHEDULE


@dataclass(frozen=True)
class SamplerSpec:
    """Which diffusers scheduler class draws a sampler, and its extra settings."""

    class_name: str
    extra: tuple[tuple[str, Any], ...] = ()


SAMPLER_SPECS: dict[str, SamplerSpec] = {
    "ddim": SamplerSpec("DDIMScheduler"),
    "pndm": SamplerSpec("PNDMScheduler"),
    "lms": SamplerSpec("LMSDiscreteScheduler"),
    "k_lms": SamplerSpec("LMSDiscreteScheduler"),
    "euler": SamplerSpec("EulerDiscreteScheduler"),
    "k_euler": SamplerSpec("EulerDiscreteScheduler"),
    "euler_a": SamplerSpec("EulerAncestralDiscreteScheduler"),
    "k_euler_a": SamplerSpec("EulerAncestralDiscreteScheduler"),
    "heun": SamplerSpec("HeunDiscreteScheduler"),
    "dpm_2": SamplerSpec("KDPM2DiscreteScheduler"),
    "k_dpm_2": SamplerSpec("KDPM2DiscreteScheduler"),
    "dpm_2_a": SamplerSpec("KDPM2AncestralDiscreteScheduler"),
    "k_dpm_2_a": SamplerSpec("KDPM2AncestralDiscreteScheduler"),
    # diffusers refuses its default final_sigmas_type "zero" with the first-generation DPM-Solver.
    "dpmsolver": SamplerSpec("DPMSolverMultistepScheduler",
                             (("algorithm_type", "dpmsolver"), ("final_sigmas_type", "sigma_min"))),
    "dpmsolver++": SamplerSpec("DPMSolverMultistepScheduler", (("algorithm_type", "dpmsolver++"),)),
    "dpmsingle": SamplerSpec("DPMSolverSinglestepScheduler"),
}


def scheduler_settings(v_parameterization: bool, zero_terminal_snr: bool) -> dict[str, Any]:
    """The settings every sampler shares; each class takes the subset it knows."""
    settings: dict[str, Any] = dict(SD_SCHEDULE)
    settings.update(
        prediction_type="v_prediction" if v_parameterization else "epsilon",
        # SD's own scheduler config: one step offset, no sample clipping (latents are not in [-1, 1]).
        steps_offset=1,
        clip_sample=False,
        set_alpha_to_one=False,
        skip_prk_steps=True,  # PNDM: SD's setting; its Runge-Kutta warm-up also fails below 4 steps
    )
    if zero_terminal_snr:
        # A zero-SNR model must start sampling at the very last timestep, which "trailing" spacing does.
        settings.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    return settings


def make_scheduler(name: str, v_parameterization: bool = False, zero_terminal_snr: bool = False,
                   option: str = "sample_sampler") -> Any:
    """A fresh diffusers scheduler for sampler ``name`` (case-insensitive); TrainerError for unknown names."""
    import diffusers

    spec = SAMPLER_SPECS.get(str(name).strip().lower())
    if spec is None:
        raise TrainerError(
            f"Unknown sampler {name!r}.",
            hint=f"Use one of: {', '.join(SAMPLER_SPECS)}.", option=option,
        )
    cls = getattr(diffusers, spec.class_name)
    settings = {**scheduler_settings(v_parameterization, zero_terminal_snr), **dict(spec.extra)}
    # diffusers refuses keyword arguments a scheduler does not define, so pass only the known ones.
    accepted = inspect.signature(cls.__init__).parameters
    with warnings.catch_warnings():
        # diffusers flags first-generation DPM-Solver as deprecated; it is still what "dpmsolver" means.
        warnings.simplefilter("ignore", FutureWarning)
        return cls(**{key: value for key, value in settings.items() if key in accepted})
