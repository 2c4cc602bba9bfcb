"""The beginner's "Network type": one choice in plain words that stands for network_module + network_args.

A form-level setting like Repeats: the trainer never sees the type, only the ``network_module``
and ``network_args`` it is written as; reading a config back recognises the type from those two
(:func:`detect_network_type`). Anything the types do not write exactly (an IA3 run, a hand-typed
``rank_dropout``...) is "Custom": the user's own settings, used as they are and never rewritten.

Why each type is written the way it is:

- LoRA and LoCon use ``networks.lora`` (LoCon = ``conv_dim``/``conv_alpha`` added): our own classic
  implementation, the one with the most tests, no LyCORIS layer code involved, and its files load
  in every UI as plain kohya LoRA/LoCon. ``lycoris.kohya algo=locon`` trains the same maths, so it
  would add a dependency for nothing.
- LoHa and LoKr exist only in LyCORIS: ``lycoris.kohya`` with ``algo=loha`` / ``algo=lokr``. Its
  default layer set includes the 3x3 convolutions; their size is ``network_dim``/``network_alpha``
  unless the conv fields say otherwise (LyCORIS' own rule). LoKr gets ``factor=8``: each weight is
  split into an (at most) 8x8 block and a block 8 times smaller than the layer on each side, which
  keeps files tiny without making the small block too coarse.
- DoRA is LyCORIS' ``dora_wd=True`` on ``algo=locon`` with ``preset=attn-mlp``: exactly the layers
  plain LoRA trains, plus the weight-norm (magnitude) part, so "LoRA with weight decomposition"
  means what it says.
- DyLoRA uses ``networks.dylora`` with its default unit (1), which divides any ``network_dim``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import CoreError
from trainer.errors import TrainerError
from trainer.options import BY_NAME
from trainer.options.schema import CHOICE, FLOAT, INT, Option

CUSTOM = "custom"  # the dropdown value of "Custom (see advanced)"
LORA_MODULE, LYCORIS_MODULE, DYLORA_MODULE = "networks.lora", "lycoris.kohya", "networks.dylora"


@dataclass(frozen=True)
class NetworkType:
    """One beginner choice. ``args``: the fixed ``network_args`` items (key, value) it writes;
    ``uses_conv``: it trains the 3x3 convolutions too (the conv fields apply); ``typical``: the
    usual ``network_dim`` range; ``suggested``: (dim, alpha) a Fix sets; ``advice``: typical values."""

    key: str
    label: str
    module: str
    args: tuple[tuple[str, str], ...]
    uses_conv: bool
    typical: tuple[int, int]
    suggested: tuple[int, float]
    advice: str


NETWORK_TYPES: dict[str, NetworkType] = {t.key: t for t in (
    NetworkType("lora", "LoRA (attention layers)", LORA_MODULE, (), False, (4, 128), (16, 8.0),
                "The usual choice: size (dim) 16-32 for a character, 32-64 for a detailed style; alpha half of "
                "the size (or 1 with a higher learning rate)."),
    NetworkType("locon", "LoCon (LoRA + conv layers)", LORA_MODULE, (), True, (4, 128), (16, 8.0),
                "LoRA plus the image model's 3x3 convolutions, which pick up textures and style better. Size "
                "16-32 with alpha half of it; conv size 4-16 (at most the size) with conv alpha half of it."),
    NetworkType("loha", "LoHa (Hadamard product, small files)", LYCORIS_MODULE, (("algo", "loha"),), True,
                (2, 32), (16, 8.0),
                "Two low-rank pairs multiplied element by element: a LoHa of size 16 can express about what a "
                "LoRA of size 256 can, so keep it small: size 8-32, alpha half of the size or 1; conv size 4-16."),
    NetworkType("lokr", "LoKr (Kronecker product, tiny files)", LYCORIS_MODULE,
                (("algo", "lokr"), ("factor", "8")), True, (1, 16), (8, 4.0),
                "A Kronecker product of a small block (factor 8) and a low-rank one: files of a few MB. Size "
                "4-16 with alpha half of it or equal (blocks small enough to store whole ignore alpha). It often "
                "learns slower per step than LoRA; a somewhat higher learning rate is usual."),
    NetworkType("dora", "DoRA (LoRA with weight decomposition)", LYCORIS_MODULE,
                (("algo", "locon"), ("dora_wd", "True"), ("preset", "attn-mlp")), False, (4, 128), (16, 8.0),
                "The layers LoRA trains, with each weight's direction and magnitude learned apart; often closer "
                "to full fine-tuning, at some extra memory and time per step. Sizes as for LoRA: 16-32, alpha "
                "half of it."),
    NetworkType("dylora", "DyLoRA (every size up to dim at once)", DYLORA_MODULE, (), False, (8, 128), (32, 16.0),
                "Trains every size up to dim in one run (each step a random one), so you can pick a smaller "
                "size afterwards; slower to learn. Size 16-64, alpha half of it."),
)}

NETWORK_TYPE = Option(
    "network_type", CHOICE, "lora", "network",
    "What kind of adapter to train, in plain words; it sets network_module and network_args for you.",
    " ".join(f"{t.label}: {t.advice}" for t in NETWORK_TYPES.values())
    + " Custom: the network_module and network_args you wrote in advanced mode, used as they are (other "
      "LyCORIS algorithms such as (IA)^3 live there).",
    level="basic", choices=(*NETWORK_TYPES, CUSTOM),
    labels=tuple((t.key, t.label) for t in NETWORK_TYPES.values()) + ((CUSTOM, "Custom (see advanced)"),),
    title="Network type",
)
CONV_DIM = Option(
    "conv_dim", INT, None, "network",
    "Size (rank) of the adapter on the 3x3 convolution layers (LoCon, LoHa, LoKr).",
    "Not set: the network size (dim). Usually smaller than dim: 4-16 for LoCon and LoHa. Written into "
    "network_args as conv_dim.",
    level="basic", minimum=1, maximum=1024, title="Conv layers size",
)
CONV_ALPHA = Option(
    "conv_alpha", FLOAT, None, "network",
    "Scales the conv layers' part like network alpha scales the rest (conv_alpha / conv_dim).",
    "Not set: the network alpha. Half of the conv size is usual. Written into network_args as conv_alpha.",
    level="basic", minimum=0, title="Conv layers alpha",
)


@dataclass(frozen=True)
class NetworkChoice:
    """A network type with its conv settings (None: the network's own dim / alpha)."""

    key: str
    conv_dim: int | None = None
    conv_alpha: float | None = None


def _number(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def network_values(choice: NetworkChoice, dim: int, alpha: float) -> tuple[str, list[str]]:
    """``(network_module, network_args)`` for ``choice`` with this network size and alpha."""
    kind = NETWORK_TYPES[choice.key]
    args = [f"{key}={value}" for key, value in kind.args]
    if kind.uses_conv:
        conv_dim, conv_alpha = choice.conv_dim, choice.conv_alpha
        if kind.module == LORA_MODULE:  # networks.lora trains no convolutions without conv_dim
            conv_dim = dim if conv_dim is None else conv_dim
            conv_alpha = alpha if conv_alpha is None else conv_alpha
        if conv_dim is not None:
            args.append(f"conv_dim={int(conv_dim)}")
        if conv_alpha is not None:
            args.append(f"conv_alpha={_number(conv_alpha)}")
    return kind.module, args


def _same(key: str, written: str, wanted: str) -> bool:
    if key == "algo":  # "lora" is LyCORIS' other name of locon
        return {written.lower(), wanted.lower()} <= {"lora", "locon"} or written.lower() == wanted.lower()
    try:
        return float(written) == float(wanted)
    except ValueError:
        return written.strip().lower() == wanted.strip().lower()


def _as_pairs(args: list[str] | tuple[str, ...] | None) -> dict[str, str] | None:
    pairs: dict[str, str] = {}
    for item in args or ():
        key, sep, value = str(item).partition("=")
        if not sep or key.strip() in pairs:
            return None
        pairs[key.strip()] = value.strip()
    return pairs


def _conv_of(pairs: dict[str, str], module: str, dim: int, alpha: float) -> tuple[int | None, float | None] | None:
    try:
        conv_dim = float(pairs["conv_dim"]) if "conv_dim" in pairs else None
        conv_alpha = float(pairs["conv_alpha"]) if "conv_alpha" in pairs else None
    except ValueError:
        return None
    if conv_dim is not None and (not conv_dim.is_integer() or conv_dim < 1):
        return None
    if conv_alpha is not None and conv_alpha < 0:
        return None
    if module == LORA_MODULE:  # LoCon: both written; equal to the network's means "not set"
        if conv_dim is None or conv_alpha is None:
            return None
        return (None if conv_dim == dim else int(conv_dim)), (None if conv_alpha == alpha else conv_alpha)
    return (None if conv_dim is None else int(conv_dim)), conv_alpha


def detect_network_type(module: str | None, args: list[str] | None, dim: int | None = None,
                        alpha: float | None = None) -> NetworkChoice | None:
    """The type ``network_module`` + ``network_args`` were written as; None when no type writes
    exactly these (Custom). ``dim``/``alpha`` (table defaults when None) decide whether LoCon's conv
    values are its own or just the network's."""
    module = str(module or BY_NAME["network_module"].default)
    dim = int(dim if dim is not None else BY_NAME["network_dim"].default)
    alpha = float(alpha if alpha is not None else BY_NAME["network_alpha"].default)
    pairs = _as_pairs(args)
    if pairs is None:
        return None
    for kind in NETWORK_TYPES.values():
        if kind.module != module:
            continue
        fixed = dict(kind.args)
        own = {key: value for key, value in pairs.items() if key not in ("conv_dim", "conv_alpha")}
        if set(own) != set(fixed) or not all(_same(key, own[key], fixed[key]) for key in fixed):
            continue
        if not kind.uses_conv:
            if len(own) == len(pairs):
                return NetworkChoice(kind.key)
            continue
        conv = _conv_of(pairs, module, dim, alpha)
        if conv is not None:
            return NetworkChoice(kind.key, *conv)
    return None


def form_network(network_type: Any, conv_dim: Any = None, conv_alpha: Any = None) -> NetworkChoice | None:
    """The form's network type, checked (None when not set or Custom). Conv values are ignored for
    types without conv layers."""
    if network_type in (None, "", CUSTOM):
        return None
    try:
        key = NETWORK_TYPE.normalise(NETWORK_TYPE.coerce(network_type, "the Network type setting"))
        if not NETWORK_TYPES[key].uses_conv:
            return NetworkChoice(key)
        dim = CONV_DIM.coerce(conv_dim, "the Conv layers size setting") if conv_dim not in (None, "") else None
        alpha = CONV_ALPHA.coerce(conv_alpha, "the Conv layers alpha setting") if conv_alpha not in (None, "") else None
    except TrainerError as problem:
        raise CoreError(problem.message, problem.hint) from None
    return NetworkChoice(key, dim, alpha)


def _typed(values: dict[str, Any], name: str) -> Any:
    option = BY_NAME[name]
    raw = values.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return option.default
    try:
        return option.normalise(option.coerce(raw, "the form"))
    except TrainerError as problem:
        raise CoreError(problem.message, problem.hint) from None


def with_network_type(values: dict[str, Any], choice: NetworkChoice | None) -> dict[str, Any]:
    """``values`` with the network_module / network_args of ``choice`` (unchanged when None).

    Never overwrites the user's own settings: a network_module other than the default or the
    type's, or network_args that are not exactly what the type writes, raise :class:`CoreError`.
    """
    if choice is None:
        return values
    dim, alpha = _typed(values, "network_dim"), _typed(values, "network_alpha")
    module, args = network_values(choice, dim, alpha)
    given_module = _typed(values, "network_module")
    given_args = _typed(values, "network_args") or []
    label = NETWORK_TYPES[choice.key].label
    found = detect_network_type(module, given_args, dim, alpha) if given_args else None
    same_args = not given_args or (found is not None and network_values(found, dim, alpha) == (module, args))
    clash = given_module not in (BY_NAME["network_module"].default, module) or not same_args
    if clash:
        raise CoreError(f"Network type {label} writes network_module = {module} and network_args = {args}, but the "
                        f"form already has network_module = {given_module} and network_args = {given_args}.",
                        "Choose 'Custom (see advanced)' to keep your own network settings, or clear network_args "
                        "to let the network type write them.")
    written = dict(values)
    for name, value in (("network_module", module), ("network_args", args)):
        if name in values or value != BY_NAME[name].default:  # a default nobody set stays out of the file
            written[name] = value
    return written


def network_type_of(values: dict[str, Any]) -> NetworkChoice | None:
    """The type a set of option values (a read config) was written as; None for Custom."""
    try:
        return detect_network_type(_typed(values, "network_module"), _typed(values, "network_args"),
                                   _typed(values, "network_dim"), _typed(values, "network_alpha"))
    except CoreError:
        return None
