"""Build the network named by ``network_module`` over a loaded model, from the training options.

``networks.lora`` is our LoRA / LoCon, ``lycoris.kohya`` the LyCORIS algorithms (built on the
``lycoris`` package's layers), ``networks.dylora`` DyLoRA. All three share LoRANetwork's interface.
"""
from __future__ import annotations

from trainer.config import TrainingConfig
from trainer.errors import TrainerError
from trainer.models.loader import LoadedModel
from trainer.networks.dylora import create_dylora_network, parse_dylora_args
from trainer.networks.lora import LoRANetwork
from trainer.networks.lycoris_args import parse_lycoris_args
from trainer.networks.lycoris_network import create_lycoris_network
from trainer.networks.lycoris_presets import load_preset

_NETWORK_ARGS = {"conv_dim", "conv_alpha"}


def parse_network_args(items: list[str]) -> dict[str, float]:
    """networks.lora's args: conv_dim and conv_alpha, as numbers."""
    parsed: dict[str, float] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or key not in _NETWORK_ARGS:
            raise TrainerError(
                f"network_args item {item!r} is not understood by networks.lora.",
                hint="networks.lora takes conv_dim=N and conv_alpha=N (LoCon). LyCORIS settings need network_module "
                     "lycoris.kohya.", option="network_args",
            )
        try:
            parsed[key] = float(value)
        except ValueError as problem:
            raise TrainerError(f"network_args {key} must be a number, got {value!r}.", option="network_args",
                               hint=f"For example {key}=8.") from problem
    return parsed


def build_network(config: TrainingConfig, model: LoadedModel, train_te: bool) -> LoRANetwork:
    """The network over the model's UNet and text encoders, weights loaded when given, applied and ready to train."""
    if config.network_module == "lycoris.kohya":
        network = _build_lycoris(config, model, train_te)
    elif config.network_module == "networks.dylora":
        network = create_dylora_network(
            model.unet, model.text_encoders, model.adapter.te_prefixes, parse_dylora_args(config.network_args),
            unet_key_for_path=model.adapter.unet_lora_path, dim=config.network_dim, alpha=config.network_alpha,
            dropout=config.network_dropout, train_unet=not config.network_train_text_encoder_only,
            train_text_encoder=train_te,
        )
    else:
        network = _build_lora(config, model, train_te)
    if config.network_weights:
        network.load_weights_file(config.network_weights)
    network.apply()
    return network


def _build_lycoris(config: TrainingConfig, model: LoadedModel, train_te: bool) -> LoRANetwork:
    settings, _ = parse_lycoris_args(config.network_args)  # the warnings were reported by the option rules
    return create_lycoris_network(
        model.unet, model.text_encoders, model.adapter.te_prefixes, settings, load_preset(settings.preset),
        unet_key_for_path=model.adapter.unet_lora_path, dim=config.network_dim, alpha=config.network_alpha,
        dropout=config.network_dropout, train_unet=not config.network_train_text_encoder_only,
        train_text_encoder=train_te,
    )


def _build_lora(config: TrainingConfig, model: LoadedModel, train_te: bool) -> LoRANetwork:
    args = parse_network_args(config.network_args)
    conv_dim = int(args["conv_dim"]) if "conv_dim" in args else None
    network = LoRANetwork.create(
        model.unet, model.text_encoders, model.adapter.te_prefixes,
        unet_key_for_path=model.adapter.unet_lora_path,
        dim=config.network_dim, alpha=config.network_alpha,
        conv_dim=conv_dim, conv_alpha=args.get("conv_alpha"),
        dropout=config.network_dropout,
        train_unet=not config.network_train_text_encoder_only, train_text_encoder=train_te,
    )
    return network
