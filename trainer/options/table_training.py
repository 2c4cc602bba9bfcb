"""Options table, part three: length, precision, loss and noise, saving, samples, logging and resume."""
from __future__ import annotations

from trainer.options.schema import BOOL, CHOICE, FLOAT, INT, PATH, STR, Option

SAMPLERS = (
    "ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver", "dpmsolver++",
    "dpmsingle", "k_lms", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a",
)

TRAINING_OPTIONS = (
    Option(
        "max_train_epochs", INT, None, "training",
        "How many times to go through the whole dataset (overrides max_train_steps).",
        "Total steps = images x repeats x epochs / batch size. 10 epochs at 10 repeats is a common start "
        "for a 20-image character.",
        level="basic", minimum=1,
    ),
    Option(
        "max_train_steps", INT, 1600, "training",
        "Total optimizer steps when max_train_epochs is not set.",
        minimum=1,
    ),
    Option(
        "train_batch_size", INT, 1, "training",
        "Images per step. Higher is faster per image but needs more VRAM.",
        "With a bigger batch, raise the learning rate a little or train more epochs: each step averages more "
        "images, so there are fewer steps.",
        level="basic", minimum=1, maximum=256,
    ),
    Option(
        "gradient_accumulation_steps", INT, 1, "training",
        "Add up gradients over N batches before each update (a bigger batch without more VRAM).",
        minimum=1,
    ),
    Option(
        "gradient_checkpointing", BOOL, False, "training",
        "Recompute activations in the backward pass instead of storing them: much less VRAM, ~20% slower.",
        "Needed for SDXL at 1024 px on GPUs under 24 GB.",
        level="basic",
    ),
    Option(
        "mixed_precision", CHOICE, "no", "precision",
        "Compute in fp16 or bf16 to save memory and time. bf16 on RTX 30xx/40xx and newer, fp16 on older.",
        "bf16 is as stable as fp32 for training; fp16 can overflow (NaN loss), especially with the SDXL VAE.",
        level="basic", choices=("no", "fp16", "bf16"),
        labels=(("no", "fp32 (no mixed precision)"), ("fp16", "fp16"), ("bf16", "bf16")),
    ),
    Option(
        "full_fp16", BOOL, False, "precision",
        "Keep the trained weights themselves in fp16 (less memory, less stable).",
    ),
    Option(
        "full_bf16", BOOL, False, "precision",
        "Keep the trained weights themselves in bf16 (less memory).",
    ),
    Option(
        "save_precision", CHOICE, None, "precision",
        "Precision of the saved file: fp16 (usual, half the size), bf16, or float (full).",
        "Empty saves in float (full precision), as sd-scripts does.",
        level="basic", choices=("float", "fp16", "bf16"),
    ),
    Option(
        "seed", INT, None, "training",
        "Random seed: the same seed and settings give the same LoRA on the same hardware.",
        minimum=0,
    ),
    Option(
        "max_data_loader_n_workers", INT, 0, "training",
        "Background processes that load images (0 loads in the training process).",
        "With cached latents there is little to load; 0-2 is plenty.",
        minimum=0,
    ),
    Option(
        "persistent_data_loader_workers", BOOL, False, "training",
        "Keep the image-loading workers alive between epochs.",
    ),
    Option(
        "lowram", BOOL, False, "training",
        "Accepted for compatibility; the trainer always loads straight to the device it can.",
    ),
)

LOSS_OPTIONS = (
    Option(
        "noise_offset", FLOAT, None, "noise",
        "Add a little constant noise so the LoRA can make darker darks and brighter lights (0.03-0.1).",
        "0.0357 is the classic value. Too much gives washed-out or overly contrasted images.",
        minimum=0, maximum=1,
    ),
    Option(
        "min_snr_gamma", FLOAT, None, "noise",
        "Min-SNR loss weighting (5 is usual): steadier, faster training.",
        "Down-weights the easy, low-noise timesteps so they do not dominate the loss.",
        minimum=0, maximum=100,
    ),
    Option(
        "min_timestep", INT, 0, "noise",
        "Lowest diffusion timestep trained (0-999).",
        minimum=0, maximum=999,
    ),
    Option(
        "max_timestep", INT, 1000, "noise",
        "One above the highest diffusion timestep trained (1-1000).",
        minimum=1, maximum=1000,
    ),
    Option(
        "scale_v_pred_loss_like_noise_pred", BOOL, False, "noise",
        "With v-prediction, weight the loss as epsilon-prediction would.",
        implemented=False,
    ),
    Option("multires_noise_iterations", INT, None, "noise",
           "Pyramid (multi-resolution) noise levels, 6-10 is usual.", minimum=0, implemented=False),
    Option("multires_noise_discount", FLOAT, 0.3, "noise",
           "How much each pyramid noise level is weakened (0.3 is usual).", minimum=0, maximum=1, implemented=False),
    Option("adaptive_noise_scale", FLOAT, None, "noise",
           "Scale the noise offset by each latent's mean.", implemented=False),
    Option("noise_offset_random_strength", BOOL, False, "noise",
           "Use a random noise offset between 0 and noise_offset.", implemented=False),
    Option("ip_noise_gamma", FLOAT, None, "noise",
           "Input-perturbation noise (0.1 is usual).", minimum=0, implemented=False),
    Option("ip_noise_gamma_random_strength", BOOL, False, "noise",
           "Use a random input-perturbation strength between 0 and ip_noise_gamma.", implemented=False),
    Option("debiased_estimation_loss", BOOL, False, "noise",
           "Debiased estimation loss weighting.", implemented=False),
    Option("loss_type", CHOICE, "l2", "noise", "The loss: l2 (usual), huber or smooth_l1.",
           choices=("l2", "huber", "smooth_l1")),
    Option("huber_schedule", CHOICE, "snr", "noise", "How huber_c changes over timesteps.",
           choices=("snr", "exponential", "constant"), implemented=False),
    Option("huber_c", FLOAT, 0.1, "noise", "The Huber loss threshold.", minimum=0, implemented=False),
    Option("masked_loss", BOOL, False, "noise", "Only learn where the mask says so.", implemented=False),
    Option("prior_loss_weight", FLOAT, 1.0, "noise", "Loss weight of regularisation images (1.0 is usual).",
           minimum=0),
)

SAVE_OPTIONS = (
    Option(
        "output_dir", PATH, None, "saving",
        "Folder the LoRA files, the events file and samples are written to.",
        level="basic",
    ),
    Option(
        "output_name", STR, "last", "saving",
        "File name of the LoRA, without extension (your project name).",
        level="basic",
    ),
    Option(
        "save_model_as", CHOICE, "safetensors", "saving",
        "File format of the LoRA (safetensors, which every tool loads).",
        choices=("safetensors",),
    ),
    Option(
        "save_every_n_epochs", INT, None, "saving",
        "Also save a numbered copy every N epochs, to pick the best one afterwards.",
        level="basic", minimum=1,
    ),
    Option("save_every_n_steps", INT, None, "saving", "Also save a numbered copy every N steps.", minimum=1),
    Option("save_last_n_epochs", INT, None, "saving",
           "Keep only the last N numbered epoch saves (older ones of THIS run are removed).", minimum=1),
    Option("save_last_n_steps", INT, None, "saving",
           "Keep only the numbered step saves of the last N steps.", minimum=1),
    Option(
        "overwrite_output", BOOL, False, "saving",
        "Allow replacing LoRA files that an earlier run left under the same name.",
        "Off by default: a run refuses to start rather than overwrite your earlier LoRA.",
    ),
    Option("events_file", PATH, None, "saving",
           "Where the JSON-lines progress events go (default: <output_dir>/<output_name>_events.jsonl)."),
    Option("no_metadata", BOOL, False, "saving", "Write no training metadata into the file."),
    Option("training_comment", STR, None, "saving", "A note stored in the file's metadata."),
    Option("metadata_title", STR, None, "saving", "Title stored in the file (modelspec.title)."),
    Option("metadata_author", STR, None, "saving", "Author stored in the file (modelspec.author)."),
    Option("metadata_description", STR, None, "saving", "Description stored in the file."),
    Option("metadata_license", STR, None, "saving", "License stored in the file."),
    Option("metadata_tags", STR, None, "saving", "Comma-separated tags stored in the file."),
    Option("metadata_trigger_phrase", STR, None, "saving",
           "Trigger words stored in the file (modelspec.trigger_phrase); defaults to the class tokens."),
    Option("save_state", BOOL, False, "state",
           "Also save the full training state (optimizer, schedule, random states) with each numbered save.",
           "A state folder (NAME-000004-state) lets resume continue exactly where the run was, learning-rate "
           "schedule included. States are several times the LoRA's size."),
    Option("save_state_on_train_end", BOOL, False, "state", "Save the full training state at the end (NAME-state)."),
    Option("save_last_n_epochs_state", INT, None, "state", "Keep only this run's last N epoch states.", minimum=1),
    Option("resume", PATH, None, "state", "Continue from a saved state folder (NAME-...-state).",
           "Use the same settings as the run that saved it; the step and epoch counters, the learning-rate "
           "schedule and the data order continue where they were. Stopping a run (Stop button, Ctrl+C) always "
           "saves a state to resume from."),
)

SAMPLE_OPTIONS = (
    Option("sample_prompts", PATH, None, "sampling",
           "A prompts file (.txt with --n --w --h --d --l --s, or .toml/.json) for preview images.",
           implemented=False),
    Option("sample_every_n_epochs", INT, None, "sampling", "Make preview images every N epochs.",
           minimum=1, implemented=False),
    Option("sample_every_n_steps", INT, None, "sampling", "Make preview images every N steps.",
           minimum=1, implemented=False),
    Option("sample_at_first", BOOL, False, "sampling", "Make preview images before training starts.",
           implemented=False),
    Option("sample_sampler", CHOICE, "ddim", "sampling", "Sampler for preview images.",
           choices=SAMPLERS, implemented=False),
)

LOG_OPTIONS = (
    Option("log_with", CHOICE, None, "logging", "Log to TensorBoard, Weights & Biases, or both.",
           choices=("tensorboard", "wandb", "all"), implemented=False),
    Option("logging_dir", PATH, None, "logging", "Folder for TensorBoard logs.", implemented=False),
    Option("log_prefix", STR, None, "logging", "Prefix of the log run name.", implemented=False),
    Option("log_tracker_name", STR, None, "logging", "Project name in the tracker.", implemented=False),
    Option("wandb_run_name", STR, None, "logging", "Run name in Weights & Biases.", implemented=False),
    Option("validation_split", FLOAT, 0.0, "validation", "Fraction of images held out for validation loss.",
           minimum=0, maximum=0.9, implemented=False),
    Option("validation_seed", INT, None, "validation", "Seed that picks the validation images.",
           implemented=False),
    Option("validate_every_n_steps", INT, None, "validation", "Validation loss every N steps.",
           minimum=1, implemented=False),
    Option("validate_every_n_epochs", INT, None, "validation", "Validation loss every N epochs.",
           minimum=1, implemented=False),
)
