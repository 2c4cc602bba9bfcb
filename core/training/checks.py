"""Live checks of a training form: the step count with its arithmetic, and findings with one-click fixes.

A :class:`Finding` says what is wrong or worth changing, why, and (when a safe change exists)
the option values that fix it, so the panel can offer a "Fix" button. Levels: ``error`` (the run
would refuse to start), ``warning`` (risky: wasted GPU hours, bad results), ``info`` (a
recommendation). Contradictions come from the trainer's own rules (``trainer.options.rules``);
importing those loads torch, so callers that must stay fast pass ``include_rules=False``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from core.errors import CoreError
from core.paths import ProjectPaths
from core.training.form import (
    ConfigPlan, TrainingForm, check_project_name, check_value, form_network_choice, form_repeats, plan_config,
)
from core.training.network_types import CUSTOM, NETWORK_TYPES, network_type_of
from core.training.steps import StepEstimate, estimate_steps, folders_of
from trainer.errors import TrainerError
from trainer.options import BY_NAME, NOT_IMPLEMENTED

ERROR, WARNING, INFO = "error", "warning", "info"
LR_FREE = ("Prodigy", "DAdaptAdam", "DAdaptLion", "DAdaptAdaGrad", "DAdaptAdan", "DAdaptSGD")
EIGHT_BIT = ("AdamW8bit", "PagedAdamW8bit", "Lion8bit")
# Highest usual learning rate per optimizer family (LoRA); above it training tends to burn in.
_LR_CEILING = {"Lion": 3e-4, "Lion8bit": 3e-4, "SGDNesterov": 1.0}
_DEFAULT_CEILING = 1e-3
FEW_STEPS, MANY_STEPS = 300, 10000


@dataclass(frozen=True)
class Finding:
    """One check result. ``fix`` maps option -> value (None resets the option to unset)."""

    level: str
    options: tuple[str, ...]
    message: str
    reason: str = ""
    fix: dict[str, Any] | None = None


@dataclass(frozen=True)
class CheckReport:
    """Everything the live-checks area shows."""

    steps: StepEstimate | None
    findings: tuple[Finding, ...] = ()
    plan: ConfigPlan | None = None

    @property
    def errors(self) -> list[Finding]:
        """Findings that stop a run."""
        return [f for f in self.findings if f.level == ERROR]


@dataclass(frozen=True)
class ModelFacts:
    """What is known about the chosen base model and the machine (None: unknown)."""

    family: str | None = None  # "sd1", "sd2", "sdxl"
    v_prediction: bool | None = None
    vram_gb: float | None = None
    has_cuda: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _typed_values(form: TrainingForm, paths: ProjectPaths) -> tuple[dict[str, Any], list[Finding]]:
    values, findings = {}, []
    for name, raw in form.values.items():
        try:
            value = check_value(name, raw, _scope(name), paths.work_dir)
        except CoreError as problem:
            default = BY_NAME[name].default if name in BY_NAME else None
            findings.append(Finding(ERROR, (name,), problem.message, problem.hint, {name: default}))
            continue
        if value is not None:
            values[name] = value
    return values, findings


def _scope(name: str) -> str:
    option = BY_NAME.get(name)
    if option is None or "train" in option.scopes:
        return "train"
    return sorted(option.scopes)[0]


def _rules(plan: ConfigPlan) -> list[Finding]:
    """The trainer's own cross-option rules on the values the files would hold."""
    from trainer.config import load_training_config
    from trainer.data.blueprint import SUBSET_FIELDS, SubsetSpec
    from trainer.options.rules import check_config

    values = {key: value for key, value in plan.values.items() if key != "dataset_config"}
    try:
        config = load_training_config(overrides=values)
        defaults = {name: config[name] for name in SUBSET_FIELDS if name in config}
        subsets = []
        for dataset in (plan.dataset or {}).get("datasets", ()):
            subsets += [SubsetSpec(**{**defaults, **subset}) for subset in dataset.get("subsets", ())]
        warnings = check_config(config, subsets)
    except TrainerError as problem:
        return [Finding(ERROR, (problem.option,) if problem.option else (), problem.message, problem.hint)]
    # network_alpha above network_dim has its own finding with a fix (below).
    return [Finding(WARNING, (), text) for text in warnings if not text.startswith("network_alpha (")]


def _learning_rate(values: dict[str, Any]) -> list[Finding]:
    optimizer = values.get("optimizer_type", "AdamW")
    rates = {name: values[name] for name in ("learning_rate", "unet_lr", "text_encoder_lr") if name in values}
    rates.setdefault("learning_rate", BY_NAME["learning_rate"].default)
    numbers = {name: (max(v) if isinstance(v, list) else v) for name, v in rates.items() if v is not None}
    if optimizer in LR_FREE:
        off = [name for name, value in numbers.items() if value != 1.0]
        if off:
            return [Finding(WARNING, (*off, "optimizer_type"),
                            f"{optimizer} finds its own step size: learning rates should be 1 ({', '.join(off)} "
                            "are not).", "A learning-rate-free optimizer multiplies its estimate by the learning "
                            "rate; anything but 1 scales every step.", {name: 1.0 for name in off})]
        return []
    ceiling = _LR_CEILING.get(optimizer, _DEFAULT_CEILING)
    high = [name for name, value in numbers.items() if value > ceiling]
    if not high:
        return []
    safe = ceiling / 10
    return [Finding(WARNING, (*high, "optimizer_type"),
                    f"Learning rate {', '.join(f'{n} = {numbers[n]:g}' for n in high)} is high for {optimizer}.",
                    f"Above about {ceiling:g} a LoRA usually burns in (noisy, over-saturated images) within a "
                    f"few hundred steps. {safe:g} is a usual value.", {name: safe for name in high})]


def _network(values: dict[str, Any]) -> list[Finding]:
    found = []
    dim = values.get("network_dim", BY_NAME["network_dim"].default)
    alpha = values.get("network_alpha", BY_NAME["network_alpha"].default)
    if alpha and alpha > dim:
        found.append(Finding(WARNING, ("network_alpha", "network_dim"),
                             f"network_alpha ({alpha:g}) is above network_dim ({dim}).",
                             "The updates are scaled by alpha / dim: above 1 they are magnified, which acts like a "
                             "much higher learning rate. Half of dim, or equal to it, is usual.",
                             {"network_alpha": float(max(1, dim // 2))}))
    if dim > 128:
        found.append(Finding(WARNING, ("network_dim",), f"network_dim {dim} is very large for a LoRA.",
                             "Large ranks make big files and memorise the training images; characters and styles "
                             "train well at 16 to 64.", {"network_dim": 32, "network_alpha": 16.0}))
    return found


def _network_type(form: TrainingForm, values: dict[str, Any]) -> list[Finding]:
    """The usual sizes of the chosen network type (or, with no type set, of the one the values
    spell): LoHa and LoKr want much smaller dims than LoRA."""
    try:
        choice = form_network_choice(form)
    except CoreError:
        return []  # reported by _form_settings
    if choice is None and form.network_type != CUSTOM:
        choice = network_type_of(values)
    if choice is None:
        return []
    kind = NETWORK_TYPES[choice.key]
    dim = values.get("network_dim", BY_NAME["network_dim"].default)
    low, high = kind.typical
    found = []
    if not low <= dim <= high:
        size, alpha = kind.suggested
        found.append(Finding(WARNING if dim > high else INFO, ("network_dim", "network_alpha"),
                             f"{kind.label}: network size {dim} is {'above' if dim > high else 'below'} the usual "
                             f"{low}-{high}.", kind.advice, {"network_dim": size, "network_alpha": alpha}))
    if kind.uses_conv and choice.conv_dim and choice.conv_dim > dim:
        found.append(Finding(INFO, ("network_dim",), f"{kind.label}: conv layers size {choice.conv_dim} is above the "
                             f"network size {dim}.", "The convolutions usually need less than the attention "
                             "layers. " + kind.advice))
    return found


def _model_fit(values: dict[str, Any], facts: ModelFacts) -> list[Finding]:
    found = []
    if facts.v_prediction and not values.get("v_parameterization"):
        found.append(Finding(ERROR, ("v_parameterization",), "The base model is a v-prediction model, but "
                             "v_parameterization is off.", "Trained on the wrong target the LoRA produces grey or "
                             "burnt images.", {"v_parameterization": True, "zero_terminal_snr": True}))
    elif values.get("v_parameterization") and not values.get("zero_terminal_snr") and facts.v_prediction:
        found.append(Finding(INFO, ("zero_terminal_snr",), "v-prediction models such as NoobAI v-pred were trained "
                             "with zero-terminal SNR; turning it on matches them.", "", {"zero_terminal_snr": True}))
    if facts.v_prediction is False and values.get("v_parameterization"):
        found.append(Finding(WARNING, ("v_parameterization",), "v_parameterization is on, but the base model is "
                             "known to predict noise (epsilon).", "The LoRA would learn a target the model never "
                             "uses.", {"v_parameterization": False, "zero_terminal_snr": False}))
    resolution = values.get("resolution", BY_NAME["resolution"].default)
    big = facts.family == "sdxl" and max(resolution) >= 1024
    if big and facts.vram_gb is not None and facts.vram_gb <= 16:
        fix: dict[str, Any] = {}
        if not values.get("gradient_checkpointing"):
            fix["gradient_checkpointing"] = True
        if not values.get("cache_text_encoder_outputs"):
            fix.update({"cache_text_encoder_outputs": True, "network_train_unet_only": True})
            for name in ("shuffle_caption", "caption_dropout_rate", "caption_tag_dropout_rate"):
                if values.get(name):
                    fix[name] = BY_NAME[name].default
        if fix:
            found.append(Finding(WARNING, tuple(fix), f"SDXL at {max(resolution)} px with {facts.vram_gb:g} GB of "
                                 "VRAM needs gradient checkpointing and cached text-encoder outputs.",
                                 "Without them SDXL overflows 16 GB and training slows to a crawl (memory spills "
                                 "into system RAM) or stops out of memory.", fix))
    if facts.family == "sdxl" and values.get("mixed_precision") == "fp16" and not values.get("no_half_vae") \
            and not values.get("vae"):
        found.append(Finding(WARNING, ("no_half_vae",), "SDXL's VAE overflows in fp16 (black images, NaN loss).",
                             "Keep the VAE in full precision, or use the sdxl-vae-fp16-fix VAE.",
                             {"no_half_vae": True}))
    return found


def _machine(values: dict[str, Any], facts: ModelFacts) -> list[Finding]:
    if facts.has_cuda:
        return []
    found = []
    optimizer = values.get("optimizer_type")
    if optimizer in EIGHT_BIT:
        found.append(Finding(WARNING, ("optimizer_type",), f"{optimizer} needs an NVIDIA GPU (bitsandbytes); "
                             "none was found.", "Without CUDA the run stops when the optimizer is made.",
                             {"optimizer_type": optimizer.replace("Paged", "").replace("8bit", "")}))
    cuda_only = [name for name in values if BY_NAME.get(name) and BY_NAME[name].needs_cuda and values[name]]
    if cuda_only:
        found.append(Finding(WARNING, tuple(cuda_only), f"{', '.join(cuda_only)} need(s) an NVIDIA GPU; none was "
                             "found.", "They do nothing or fail without CUDA.", {name: None for name in cuda_only}))
    return found


def _length(steps: StepEstimate) -> list[Finding]:
    if not steps.images_per_epoch:
        return []
    per_epoch = max(1, steps.steps_per_epoch)
    if steps.total_steps < FEW_STEPS:
        epochs = math.ceil(FEW_STEPS * 2 / per_epoch)
        fix = {"max_train_epochs": epochs} if steps.by_epochs else {"max_train_steps": FEW_STEPS * 2}
        return [Finding(WARNING, tuple(fix), f"Only {steps.total_steps} steps: the LoRA will likely learn too little.",
                        f"Most LoRAs need {FEW_STEPS * 2}-3000 steps (more images, repeats or epochs).", fix)]
    if steps.total_steps > MANY_STEPS:
        epochs = max(1, math.floor(3000 / per_epoch))
        fix = {"max_train_epochs": epochs} if steps.by_epochs else {"max_train_steps": 3000}
        return [Finding(WARNING, tuple(fix), f"{steps.total_steps} steps is a very long run.",
                        "Past a few thousand steps a LoRA usually over-fits (copies its images) and the GPU hours "
                        "buy nothing; save every few epochs and compare instead.", fix)]
    return []


def _recommendations(values: dict[str, Any]) -> list[Finding]:
    found = []
    if not values.get("cache_latents") and not values.get("random_crop") and not values.get("color_aug"):
        found.append(Finding(INFO, ("cache_latents",), "Caching latents makes every step faster.",
                             "The VAE then encodes each image once instead of every epoch.", {"cache_latents": True}))
    unused = sorted(name for name in values if name in NOT_IMPLEMENTED and values[name] != BY_NAME[name].default)
    if unused:
        found.append(Finding(INFO, tuple(unused), f"{', '.join(unused)}: accepted but not used by this trainer yet.",
                             "; ".join(NOT_IMPLEMENTED[name] for name in unused), {name: None for name in unused}))
    return found


def _names(form: TrainingForm, name: str | None) -> list[Finding]:
    """Say so when a typed project or config name is changed to be a safe folder and file name."""
    found = []
    for what, typed in (("Project name", form.project), ("Config name", name)):
        try:
            safe = check_project_name(typed) if typed else None
        except CoreError as problem:
            found.append(Finding(ERROR, (), problem.message, problem.hint))
            continue
        if safe is not None and safe != typed.strip():
            found.append(Finding(INFO, (), f"{what} {typed.strip()!r} is used as {safe!r} for folders and files.",
                                 "Some characters are not allowed in file names on every system."))
    return found


def _form_settings(form: TrainingForm) -> list[Finding]:
    """The form's own settings (Repeats, Network type and its conv fields), checked."""
    found = []
    for check in (form_repeats, form_network_choice):
        try:
            check(form)
        except CoreError as problem:
            found.append(Finding(ERROR, (), problem.message, problem.hint))
    return found


def live_checks(form: TrainingForm, paths: ProjectPaths, facts: ModelFacts | None = None,
                include_rules: bool = True, name: str | None = None) -> CheckReport:
    """Steps and findings for the form as it is now (nothing is written). ``name``: the config name
    the files would be saved as (default: the project name), so the plan is exactly what Save writes."""
    facts = facts or ModelFacts()
    values, findings = _typed_values(form, paths)
    findings += _names(form, name) + _form_settings(form)
    if not values.get("pretrained_model_name_or_path"):
        findings.append(Finding(ERROR, ("pretrained_model_name_or_path",), "No base model chosen.",
                                "Pick a downloaded model (setup panel) or paste a model path."))
    if not any(values.get(name) for name in ("train_data_dir", "image_dir", "dataset_config")):
        findings.append(Finding(ERROR, ("train_data_dir",), "No dataset folder chosen.",
                                "Pick the folder that holds your N_name image folders (e.g. datasets/my_char)."))
    plan = None
    if not [finding for finding in findings if finding.level == ERROR]:
        try:
            plan = plan_config(form, paths, name or None)
        except CoreError as problem:
            findings.append(Finding(ERROR, (), problem.message, problem.hint))
    steps = None
    # With the user's own dataset_config the folders are theirs to count; otherwise count them here.
    if plan is not None and (plan.dataset or not values.get("dataset_config")):
        folders = folders_of(plan.values, plan.dataset)
        batch = plan.dataset["datasets"][0].get("batch_size") if plan.dataset else None
        steps = estimate_steps(plan.values, folders, batch)
        if form.repeats and plan.dataset:
            steps = replace(steps, note=(f"Repeats = {form_repeats(form)} for every image folder (the Repeats "
                                         "setting; the numbers in the folder names are not used). " + steps.note).strip())
        if not steps.images:
            findings.append(Finding(ERROR, ("train_data_dir",), "No images found in the dataset folder's N_name "
                                    "folders.", "Inside the dataset folder, each image folder must be named like "
                                    "10_mychar (10 repeats). Set the folder that CONTAINS them."))
        findings += _length(steps)
    if include_rules and plan is not None:
        findings += _rules(plan)
    findings += _learning_rate(values) + _network(values) + _network_type(form, values)
    findings += _model_fit(values, facts) + _machine(values, facts)
    findings += _recommendations(values)
    return CheckReport(steps, tuple(findings), plan)
