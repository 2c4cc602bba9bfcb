"""Draw preview images with the model being trained: no reload, the LoRA as it is right now.

A diffusers pipeline is assembled around the run's own parts (UNet with the LoRA applied, VAE,
text encoders, tokenizers), with the prompts encoded by the family adapter exactly as captions
are encoded for training (clip_skip, long prompts in 75-token chunks, SDXL's two encoders).
Everything runs under ``no_grad`` with every part in eval mode, and the modes and the global
random state are put back afterwards, so making samples never changes what the run learns.

Files: ``<output_dir>/sample/<output_name>_<step, 6 digits>_<prompt index, 2 digits>.png``
(step 0 is ``sample_at_first``). No timestamp, so two runs with the same seed give files of the
same names and bytes; a name that already exists gets ``_2``, ``_3``, ... instead of being replaced.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from trainer.optim_steps import weights_for_use

from trainer.sampling.prompts import SamplePrompt
from trainer.sampling.samplers import make_scheduler

SAMPLE_FOLDER = "sample"


@contextmanager
def evaluation_mode(session: Any) -> Iterator[None]:
    """Eval mode, no grad, the optimizer's weights for use, and a saved global RNG for the block.

    Every module's mode is restored after.

    The LoRA modules are not children of the UNet (they take over its layers' ``forward``), so
    the network's mode is switched on its own.
    """
    model = session.model
    modules = [model.unet, session.network, *model.text_encoders]
    before = [module.training for module in modules]
    cpu_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        for module in modules:
            module.eval()
        # Schedule-free optimizers keep a training point apart from the weights to use: evaluate those.
        with torch.no_grad(), weights_for_use(session.optimizer):
            yield
    finally:
        for module, mode in zip(modules, before):
            module.train(mode)
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def build_pipeline(model: Any, scheduler: Any) -> Any:
    """A StableDiffusion(XL)Pipeline over the loaded parts; nothing is copied or reloaded."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if model.family == "sdxl":
        pipeline = StableDiffusionXLPipeline(
            vae=model.vae, text_encoder=model.text_encoders[0], text_encoder_2=model.text_encoders[1],
            tokenizer=model.tokenizers[0], tokenizer_2=model.tokenizers[1], unet=model.unet, scheduler=scheduler,
            add_watermarker=False,  # a watermark would change the pixels users judge the LoRA by
        )
    else:
        pipeline = StableDiffusionPipeline(
            vae=model.vae, text_encoder=model.text_encoders[0], tokenizer=model.tokenizers[0], unet=model.unet,
            scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def prompt_embeddings(session: Any, prompt: SamplePrompt) -> dict[str, torch.Tensor]:
    """The pipeline's ``*_embeds`` arguments for one prompt and its negative, encoded as in training."""
    config, adapter = session.config, session.model.adapter
    encoded = adapter.encode_prompts([prompt.prompt, prompt.negative_prompt], config.clip_skip,
                                     config.max_token_length)
    states = encoded.encoder_hidden_states
    arguments = {"prompt_embeds": states[0:1], "negative_prompt_embeds": states[1:2]}
    if encoded.pooled is not None:
        arguments.update(pooled_prompt_embeds=encoded.pooled[0:1], negative_pooled_prompt_embeds=encoded.pooled[1:2])
    return arguments


def generate_image(session: Any, prompt: SamplePrompt) -> Any:
    """One PIL image for a resolved prompt (call inside :func:`evaluation_mode`)."""
    model = session.model
    scheduler = make_scheduler(str(prompt.sample_sampler), model.v_parameterization,
                               bool(session.config.zero_terminal_snr))
    pipeline = build_pipeline(model, scheduler)
    # A CPU generator gives the same starting noise on any device, so a seed means the same image.
    generator = torch.Generator(device="cpu").manual_seed(int(prompt.seed or 0))
    with session.accelerator.autocast():
        result = pipeline(
            **prompt_embeddings(session, prompt), height=prompt.height, width=prompt.width,
            num_inference_steps=prompt.sample_steps, guidance_scale=prompt.scale, generator=generator,
            output_type="pil",
        )
    return result.images[0]


def sample_path(folder: Path, output_name: str, step: int, index: int) -> Path:
    """``<output_name>_<step:06d>_<index:02d>.png`` in ``folder``, or the first free ``_N`` variant."""
    stem = f"{output_name}_{step:06d}_{index:02d}"
    path = folder / f"{stem}.png"
    number = 2
    while path.exists():
        path = folder / f"{stem}_{number}.png"
        number += 1
    return path


def generate_samples(session: Any, prompts: Sequence[SamplePrompt], step: int, folder: Path) -> list[Path]:
    """Draw and save every prompt's image (prompts already resolved); returns the files in prompt order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with evaluation_mode(session):
        for prompt in prompts:
            image = generate_image(session, prompt)
            path = sample_path(folder, session.paths.output_name, step, prompt.index)
            image.save(path, format="PNG")
            paths.append(path)
    return paths
