"""Build the network named by ``network_module`` over a loaded model, from the training options."""
from __future__ import annotations

from trainer.config import TrainingConfig
from trainer.errors import TrainerError
from trainer.models.loader import LoadedModel
from trainer.networks.lora import LoRANetwork

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
    """The LoRA network over the model's UNet and text encoders, applied and ready to train."""
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
    if config.network_weights:
        network.load_weights_file(config.network_weights)
    network.apply()
    return network
