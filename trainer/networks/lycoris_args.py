"""``network_args`` of ``network_module = "lycoris.kohya"``, read into typed settings.

Keys and defaults are LyCORIS' own (its kohya entry point), so a config written for sd-scripts +
LyCORIS trains the same network here. Differences, all refusals rather than silent changes:
unknown keys, ``dora_wd`` with an algorithm that has no DoRA form, and the LyCORIS algorithms this
trainer does not offer (``dylora``: use ``networks.dylora``; ``tlora``) are errors.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainer.errors import TrainerError

# lycoris' own algorithm names; "lora" is its alias of "locon".
ALGOS = ("lora", "locon", "loha", "lokr", "ia3", "glora", "diag-oft", "boft", "full")
DORA_ALGOS = frozenset({"lora", "locon", "loha", "lokr"})
TUCKER_ALGOS = DORA_ALGOS

_REFUSED_ALGOS = {
    "dylora": 'Use network_module = "networks.dylora" with network_args ["unit=N"].',
    "tlora": "T-LoRA is not available in this trainer; use algo=locon, loha or lokr.",
}
# Old lycoris spellings of use_tucker. disable_conv_cp is the inverse switch.
_TUCKER_ALIASES = ("use_cp", "use_conv_cp")

# key -> (kind, algos it acts on, or None for every algo)
_KEYS: dict[str, tuple[str, frozenset[str] | None]] = {
    "algo": ("str", None),
    "preset": ("str", None),
    "conv_dim": ("int", None),
    "conv_alpha": ("float", None),
    "dropout": ("fraction", None),
    "rank_dropout": ("fraction", None),
    "module_dropout": ("fraction", None),
    "rank_dropout_scale": ("bool", None),
    "use_tucker": ("bool", TUCKER_ALGOS),
    "use_cp": ("bool", TUCKER_ALGOS),
    "use_conv_cp": ("bool", TUCKER_ALGOS),
    "disable_conv_cp": ("bool", TUCKER_ALGOS),
    "use_scalar": ("bool", frozenset({"lora", "locon", "loha", "lokr", "glora"})),
    "train_norm": ("bool", None),
    "dora_wd": ("bool", DORA_ALGOS),
    "wd_on_output": ("bool", DORA_ALGOS),
    "factor": ("int", frozenset({"lokr"})),
    "decompose_both": ("bool", frozenset({"lokr"})),
    "full_matrix": ("bool", frozenset({"lokr"})),
    "unbalanced_factorization": ("bool", frozenset({"lokr"})),
    "constraint": ("float", frozenset({"diag-oft", "boft"})),
    "rescaled": ("bool", frozenset({"diag-oft", "boft"})),
    "bypass_mode": ("bool", frozenset(ALGOS) - {"full"}),
    "rs_lora": ("bool", frozenset({"lora", "locon", "loha", "lokr", "glora"})),
}

_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


@dataclass(frozen=True)
class LycorisSettings:
    """The parsed ``network_args``, with LyCORIS' defaults for what was not written."""

    algo: str = "locon"
    preset: str = "full"
    conv_dim: int | None = None  # None: network_dim, as lycoris does
    conv_alpha: float | None = None  # None: network_alpha
    dropout: float | None = None  # None: network_dropout
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    rank_dropout_scale: bool = False
    use_tucker: bool = False
    use_scalar: bool = False
    train_norm: bool = False
    dora_wd: bool = False
    wd_on_output: bool = True
    factor: int = -1
    decompose_both: bool = False
    full_matrix: bool = False
    unbalanced_factorization: bool = False
    constraint: float = 0.0
    rescaled: bool = False
    bypass_mode: bool | None = None  # None: decided per layer (see lycoris_network)
    rs_lora: bool = False

    def module_kwargs(self) -> dict[str, Any]:
        """Keyword arguments every lycoris module class accepts (each ignores the ones it has no use for)."""
        return {
            "rank_dropout": self.rank_dropout, "module_dropout": self.module_dropout,
            "rank_dropout_scale": self.rank_dropout_scale, "use_tucker": self.use_tucker,
            "use_scalar": self.use_scalar, "weight_decompose": self.dora_wd, "wd_on_out": self.wd_on_output,
            "factor": self.factor, "decompose_both": self.decompose_both, "full_matrix": self.full_matrix,
            "unbalanced_factorization": self.unbalanced_factorization, "constraint": self.constraint,
            "rescaled": self.rescaled, "rs_lora": self.rs_lora,
        }


def _bad(message: str, hint: str) -> TrainerError:
    return TrainerError(message, hint=hint, option="network_args")


def _convert(key: str, kind: str, text: str) -> Any:
    try:
        if kind == "str":
            return text
        if kind == "bool":
            lowered = text.lower()
            if lowered in _TRUE | _FALSE:
                return lowered in _TRUE
            raise ValueError(text)
        if kind == "int":
            number = float(text)
            if not number.is_integer():
                raise ValueError(text)
            return int(number)
        value = float(text)
    except ValueError as problem:
        words = {"bool": "True or False", "int": "a whole number"}.get(kind, "a number")
        raise _bad(f"network_args {key} must be {words}, got {text!r}.", f"For example {key}="
                   f"{ {'bool': 'True', 'int': '8'}.get(kind, '0.1') }.") from problem
    if kind == "fraction" and not 0.0 <= value < 1.0:
        raise _bad(f"network_args {key} must be between 0 and 1, got {value}.", f"For example {key}=0.1.")
    return value


def parse_lycoris_args(items: Sequence[str]) -> tuple[LycorisSettings, list[str]]:
    """Read ``["algo=loha", "conv_dim=8", ...]``; returns the settings and warnings.

    Warnings name keys that have no effect with the chosen algorithm. Raises
    :class:`TrainerError` (option ``network_args``) for anything that cannot be trained as written.
    """
    raw: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise _bad(f"network_args item {item!r} is not key=value.", 'Write items such as "algo=loha".')
        if key not in _KEYS:
            if key.startswith("loraplus"):
                raise _bad(f"network_args {key} (LoRA+) is not available in this trainer yet.", f"Remove {key}.")
            raise _bad(f"network_args {key!r} is not a lycoris.kohya setting.",
                       "Known keys: " + ", ".join(sorted(_KEYS)) + ".")
        raw[key] = _convert(key, _KEYS[key][0], value)

    algo = str(raw.get("algo", "locon")).lower()
    if algo in _REFUSED_ALGOS:
        raise _bad(f"network_args algo={algo} is not available with lycoris.kohya here.", _REFUSED_ALGOS[algo])
    if algo not in ALGOS:
        raise _bad(f"network_args algo={algo!r} is not a LyCORIS algorithm.", "Use one of: " + ", ".join(ALGOS) + ".")
    warnings = [
        f"network_args {key} has no effect with algo={algo}."
        for key in raw if _KEYS[key][1] is not None and algo not in _KEYS[key][1]  # type: ignore[operator]
    ]
    if raw.get("dora_wd") and algo not in DORA_ALGOS:
        raise _bad(f"dora_wd (DoRA) does not exist for algo={algo}.",
                   "Use dora_wd with algo=locon, loha or lokr, or remove it.")
    if "full" == algo and raw.get("bypass_mode"):
        raise _bad("bypass_mode cannot be used with algo=full.", "Remove bypass_mode.")
    conv_dim = raw.get("conv_dim")
    if conv_dim is not None and conv_dim < 1:
        raise _bad(f"network_args conv_dim must be at least 1, got {conv_dim}.",
                   "To leave out the 3x3 convolutions use preset=attn-mlp (or full-lin) instead.")
    if raw.get("conv_alpha") is not None and raw["conv_alpha"] < 0:
        raise _bad("network_args conv_alpha cannot be negative.", "For example conv_alpha=1.")
    factor = raw.get("factor", -1)
    if factor == 0 or factor < -1:
        raise _bad(f"network_args factor must be -1 (automatic) or a positive number, got {factor}.",
                   "For example factor=8, or factor=-1.")

    use_tucker = bool(raw.get("use_tucker") or any(raw.get(alias) for alias in _TUCKER_ALIASES)
                      or raw.get("disable_conv_cp") is False)
    settings = LycorisSettings(
        algo=algo,
        preset=str(raw.get("preset", "full")),
        conv_dim=conv_dim,
        conv_alpha=raw.get("conv_alpha"),
        dropout=raw.get("dropout"),
        rank_dropout=raw.get("rank_dropout", 0.0),
        module_dropout=raw.get("module_dropout", 0.0),
        rank_dropout_scale=raw.get("rank_dropout_scale", False),
        use_tucker=use_tucker,
        use_scalar=raw.get("use_scalar", False),
        train_norm=raw.get("train_norm", False),
        dora_wd=raw.get("dora_wd", False),
        wd_on_output=raw.get("wd_on_output", True),
        factor=factor,
        decompose_both=raw.get("decompose_both", False),
        full_matrix=raw.get("full_matrix", False),
        unbalanced_factorization=raw.get("unbalanced_factorization", False),
        constraint=raw.get("constraint", 0.0),
        rescaled=raw.get("rescaled", False),
        bypass_mode=raw.get("bypass_mode"),
        rs_lora=raw.get("rs_lora", False),
    )
    return settings, warnings
