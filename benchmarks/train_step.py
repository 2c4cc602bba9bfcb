"""Trainer step time against a bare training loop, and cached against uncached latents.

Run: ``python benchmarks/train_step.py [--steps 30] [--warmup 5]``. Uses the tiny SDXL fixture at
batch 4, built offline into a temporary folder. Three measurements in one run, side by side:

1. the trainer (``trainer.loop.train``) with cached latents and cached text-encoder outputs;
2. a bare loop over the same model, LoRA parameters, optimizer and cached inputs: noise,
   forward, loss, backward, optimizer step, nothing else;
3. the trainer without cached latents (the VAE encodes each batch).

It prints median steady-state step times and the ratios trainer/bare (goal: 1.05 or lower)
and uncached/cached.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _dataset(root: Path) -> Path:
    from PIL import Image, ImageDraw

    folder = root / "train" / "1_bench"
    folder.mkdir(parents=True)
    for index in range(8):
        image = Image.new("RGB", (128, 128), (255, 255, 255))
        ImageDraw.Draw(image).rectangle((16 + index, 16, 80 + index, 112), fill=(30 * index, 80, 200 - 20 * index))
        image.save(folder / f"img{index}.png")
        (folder / f"img{index}.txt").write_text(f"bench, shape {index}", encoding="utf-8")
    return root / "train"


def _config(model, data: Path, out: Path, steps: int, cached: bool):
    from trainer.config import load_training_config

    return load_training_config(overrides={
        "pretrained_model_name_or_path": str(model.single_file), "model_config": str(model.config_dir),
        "train_data_dir": str(data), "output_dir": str(out), "output_name": "bench", "resolution": "128",
        "network_dim": "8", "network_alpha": "8", "train_batch_size": "4", "max_train_steps": str(steps),
        "seed": "1", "network_train_unet_only": "true", "cache_latents": str(cached).lower(),
        "cache_text_encoder_outputs": "true",
    })


def _trainer_step_times(config) -> list[float]:
    from trainer.events import read_events
    from trainer.loop import train
    from trainer.session import prepare_session

    session = prepare_session(config)
    train(session)
    session.events.close()
    times = [e["time"] for e in read_events(session.events.path) if e["type"] == "step"]
    return [b - a for a, b in zip(times, times[1:])]


def _bare_step_times(config, steps: int) -> list[float]:
    """The same model/LoRA/optimizer and cached inputs, in the plainest loop that trains."""
    import torch

    from trainer.data.epochs import epoch_batches
    from trainer.session import prepare_session

    session = prepare_session(config)
    session.events.close()
    model, optimizer = session.model, session.optimizer
    batches = list(epoch_batches(session.scan.records, session.datasets, 1, 1, session.latent_cache))
    inputs = []
    for batch in batches:
        cond = [session.text_cache[c] for c in batch["captions"]]
        hidden = torch.cat([c.encoder_hidden_states for c in cond])
        pooled = torch.cat([c.pooled for c in cond])
        added = model.adapter.unet_added_conditioning(batch["original_sizes"].tolist(), batch["crop_top_lefts"].tolist(),
                                                      batch["target_sizes"].tolist(), pooled, torch.float32, "cpu")
        inputs.append((batch["latents"], hidden, added))
    generator = torch.Generator().manual_seed(1)
    session.network.train()
    durations = []
    for step in range(steps):
        started = time.perf_counter()
        latents, hidden, added = inputs[step % len(inputs)]
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, 1000, (latents.shape[0],), generator=generator)
        noisy = model.noise_scheduler.add_noise(latents, noise, timesteps)
        prediction = model.unet(noisy, timesteps, hidden, added_cond_kwargs=added).sample
        loss = torch.nn.functional.mse_loss(prediction, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        durations.append(time.perf_counter() - started)
    return durations


def main(argv: list[str] | None = None) -> int:
    """Measure and print the three step times and their ratios."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from tests.fixtures import build_sdxl

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_sdxl(root / "sdxl")
        data = _dataset(root)
        total = args.steps + args.warmup
        trainer: list[float] = []
        bare: list[float] = []
        uncached: list[float] = []
        # Rounds interleave the three, so a noisy neighbour on the machine hits all of them alike.
        for round_number in range(args.rounds):
            def out(name: str) -> Path:
                return root / f"{name}{round_number}"
            trainer += _trainer_step_times(_config(model, data, out("a"), total, cached=True))[args.warmup:]
            bare += _bare_step_times(_config(model, data, out("b"), total, cached=True), total)[args.warmup:]
            uncached += _trainer_step_times(_config(model, data, out("c"), total, cached=False))[args.warmup:]
    t, b, u = (statistics.median(x) for x in (trainer, bare, uncached))
    print(f"tiny SDXL, batch 4, 128x128, {args.rounds} rounds x {args.steps} steady steps, {args.threads} thread(s)")
    print(f"trainer (cached latents)   {t * 1000:8.1f} ms/step")
    print(f"bare loop (cached inputs)  {b * 1000:8.1f} ms/step")
    print(f"trainer (uncached latents) {u * 1000:8.1f} ms/step")
    print(f"overhead ratio trainer/bare      {t / b:6.3f}  (goal <= 1.05)")
    print(f"latent caching ratio uncached/cached {u / t:6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
