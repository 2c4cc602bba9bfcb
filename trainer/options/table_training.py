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
        title="Epochs",
    ),
    Option(
        "max_train_steps", INT, 1600, "training",
        "Total optimizer steps when max_train_epochs is not set.",
        "A step is one update of train_batch_size x gradient_accumulation_steps images. Setting max_train_epochs is "
        "usually easier to reason about; the default 1600 is a placeholder, not a recommendation.",
        minimum=1,
        title="Total steps (when epochs are not set)",
    ),
    Option(
        "train_batch_size", INT, 1, "training",
        "Images per step. Higher is faster per image but needs more VRAM.",
        "With a bigger batch, raise the learning rate a little or train more epochs: each step averages more "
        "images, so there are fewer steps.",
        level="basic", minimum=1, maximum=256,
        title="Batch size",
    ),
    Option(
        "gradient_accumulation_steps", INT, 1, "training",
        "Add up gradients over N batches before each update (a bigger batch without more VRAM).",
        "With batch size 1 and 4 accumulation steps, each update averages 4 images, like batch size 4 with the VRAM "
        "of batch size 1. It also means fewer updates per epoch, so adjust learning rate or epochs as for a bigger "
        "batch; 1 (off) is normal.",
        minimum=1,
        title="Gradient accumulation steps",
    ),
    Option(
        "gradient_checkpointing", BOOL, False, "training",
        "Recompute activations in the backward pass instead of storing them: much less VRAM, ~20% slower.",
        "Needed for SDXL at 1024 px on GPUs under 24 GB.",
        level="basic",
        title="Save VRAM (gradient checkpointing)",
    ),
    Option(
        "mixed_precision", CHOICE, "no", "precision",
        "Compute in fp16 or bf16 to save memory and time. bf16 on RTX 30xx/40xx and newer, fp16 on older.",
        "bf16 is as stable as fp32 for training; fp16 can overflow (NaN loss), especially with the SDXL VAE.",
        level="basic", choices=("no", "fp16", "bf16"),
        labels=(("no", "fp32 (no mixed precision)"), ("fp16", "fp16"), ("bf16", "bf16")),
        title="Compute precision",
    ),
    Option(
        "full_fp16", BOOL, False, "precision",
        "Keep the trained weights themselves in fp16 (less memory, less stable).",
        "Needs mixed_precision fp16. It saves a little more VRAM than mixed precision alone, but fp16 weights can "
        "lose small updates or overflow to NaN; use it only when training will not fit otherwise.",
    ),
    Option(
        "full_bf16", BOOL, False, "precision",
        "Keep the trained weights themselves in bf16 (less memory).",
        "Needs mixed_precision bf16 (RTX 30xx or newer). It saves some VRAM and does not overflow like fp16, but "
        "very small updates can be rounded away, so results may be slightly worse than plain mixed precision.",
    ),
    Option(
        "save_precision", CHOICE, None, "precision",
        "Precision of the saved file: fp16 (usual, half the size), bf16, or float (full).",
        "Empty saves in float (full precision), as sd-scripts does.",
        level="basic", choices=("float", "fp16", "bf16"),
        title="Saved file precision",
    ),
    Option(
        "seed", INT, None, "training",
        "Random seed: the same seed and settings give the same LoRA on the same hardware.",
        "Any number works; keep it fixed (e.g. 42) when comparing settings, so your change is the only difference "
        "between runs. When empty, the LoRA's starting weights differ from run to run.",
        minimum=0,
        title="Random seed",
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
        "Only matters when max_data_loader_n_workers is above 0: it avoids restarting the workers each epoch, which "
        "otherwise causes a pause at every epoch start. It costs some system RAM; leave it off with 0 workers.",
    ),
    Option(
        "lowram", BOOL, False, "training",
        "Accepted for compatibility; the trainer always loads straight to the device it can.",
        "sd-scripts uses it to load the model straight to the GPU on machines with little system RAM (e.g. Colab). "
        "Here it changes nothing and can stay off.",
    ),
)

LOSS_OPTIONS = (
    Option(
        "noise_offset", FLOAT, None, "noise",
        "Add a little constant noise so the LoRA can make darker darks and brighter lights (0.03-0.1).",
        "0.0357 is the classic value. Too much gives washed-out or overly contrasted images.",
        minimum=0, maximum=1,
        title="Noise offset",
    ),
    Option(
        "min_snr_gamma", FLOAT, None, "noise",
        "Min-SNR loss weighting (5 is usual): steadier, faster training.",
        "Down-weights the easy, low-noise timesteps so they do not dominate the loss.",
        minimum=0, maximum=100,
        title="Min-SNR weighting (gamma)",
    ),
    Option(
        "min_timestep", INT, 0, "noise",
        "Lowest diffusion timestep trained (0-999).",
        "Low timesteps are nearly clean images (fine detail), high ones nearly pure noise (composition and colour). "
        "Leave it at 0, and max_timestep at 1000, unless you deliberately want to train only part of that range.",
        minimum=0, maximum=999,
    ),
    Option(
        "max_timestep", INT, 1000, "noise",
        "One above the highest diffusion timestep trained (1-1000).",
        "Must be above min_timestep. The default 1000 trains every noise level, which is right for nearly all LoRAs; "
        "lowering it skips the noisiest steps, where overall layout is learned.",
        minimum=1, maximum=1000,
    ),
    Option(
        "scale_v_pred_loss_like_noise_pred", BOOL, False, "noise",
        "With v-prediction, weight the loss as epsilon-prediction would.",
        "Multiplies each sample's loss by snr/(snr+1), which turns a v-prediction error into the epsilon error "
        "of the same prediction. Only acts on v-prediction models.",
    ),
    Option("multires_noise_iterations", INT, None, "noise",
           "Pyramid (multi-resolution) noise levels, 6-10 is usual.",
           "Adds noise at ever coarser resolutions on top of the usual noise, which helps a LoRA learn large "
           "shapes and overall brightness. Works together with noise_offset.", minimum=0),
    Option("multires_noise_discount", FLOAT, 0.3, "noise",
           "How much each pyramid noise level is weakened (0.3 is usual).",
           "Level i of the pyramid is weighted discount^i; lower values keep the coarse levels faint.",
           minimum=0, maximum=1),
    Option("adaptive_noise_scale", FLOAT, None, "noise",
           "Add this many times each latent channel's mean brightness to noise_offset (needs noise_offset).",
           "Gives images far from mid-grey a stronger offset; 0.01-0.03 is usual. May be negative."),
    Option("noise_offset_random_strength", BOOL, False, "noise",
           "Use a random noise offset between 0 and noise_offset each step.",
           "Varies the offset instead of always applying the full noise_offset, which keeps most of the brightness "
           "benefit with less risk of a constant shift in contrast. Needs noise_offset; off is the usual choice."),
    Option("ip_noise_gamma", FLOAT, None, "noise",
           "Input-perturbation noise (0.1 is usual).",
           "Perturbs the noisy input with a little extra noise the model is not asked to predict, which "
           "reduces the gap between training and sampling.", minimum=0),
    Option("ip_noise_gamma_random_strength", BOOL, False, "noise",
           "Use a random input-perturbation strength between 0 and ip_noise_gamma each step.",
           "Needs ip_noise_gamma. Varying the strength gives a milder, less uniform version of the same "
           "regularisation; off is the usual choice."),
    Option("debiased_estimation_loss", BOOL, False, "noise",
           "Weight each sample's loss by 1/sqrt(SNR) (debiased estimation).",
           "Evens out how much each timestep teaches; an alternative to min_snr_gamma that often keeps more "
           "detail. With v-prediction the weight is 1/(SNR+1)."),
    Option("loss_type", CHOICE, "l2", "noise", "The loss: l2 (usual), huber or smooth_l1.",
           "huber and smooth_l1 are less swayed by outliers (odd pixels, artefacts in the data); their "
           "threshold follows huber_schedule and huber_c.",
           choices=("l2", "huber", "smooth_l1")),
    Option("huber_schedule", CHOICE, "snr", "noise", "How huber_c changes over timesteps (huber and smooth_l1).",
           "snr (usual): about 1 at low noise, huber_c at high noise. exponential: falls from 1 to huber_c "
           "over the timesteps. constant: huber_c everywhere.",
           choices=("snr", "exponential", "constant")),
    Option("huber_c", FLOAT, 0.1, "noise", "The Huber loss threshold (huber and smooth_l1).",
           "Errors much smaller than it are weighted like l2, much larger ones like l1.", minimum=0),
    Option("masked_loss", BOOL, False, "noise", "Only learn where the mask says so.",
           "The masks are the images' alpha channels (set alpha_mask on the subsets): transparent pixels add "
           "nothing to the loss, half-transparent ones half."),
    Option("prior_loss_weight", FLOAT, 1.0, "noise", "Loss weight of regularisation images (1.0 is usual).",
           "Only matters when you use regularisation images (reg_data_dir or is_reg subsets). Lower it (e.g. 0.5) if "
           "they pull your subject back towards the generic class; raise it if the LoRA changes the whole class too "
           "much.",
           minimum=0),
)

SAVE_OPTIONS = (
    Option(
        "output_dir", PATH, None, "saving",
        "Folder the LoRA files, the events file and samples are written to.",
        "Use one folder per project so runs do not mix. The final LoRA is <output_name>.safetensors here; numbered "
        "saves, sample images and (by default) logs go here too.",
        level="basic",
        title="Output folder",
    ),
    Option(
        "output_name", STR, "last", "saving",
        "File name of the LoRA, without extension (your project name).",
        "Pick a distinct name such as mychar_v1: numbered saves are called NAME-000004.safetensors, and a run "
        "refuses to replace an earlier LoRA of the same name unless overwrite_output is on.",
        level="basic",
        title="LoRA file name",
    ),
    Option(
        "save_model_as", CHOICE, "safetensors", "saving",
        "File format of the LoRA (safetensors, which every tool loads).",
        "safetensors is the only format offered: every UI (A1111, Forge, ComfyUI) loads it, and unlike the old .ckpt "
        "format it cannot carry hidden code. Nothing to change here.",
        choices=("safetensors",),
    ),
    Option(
        "save_every_n_epochs", INT, None, "saving",
        "Also save a numbered copy every N epochs, to pick the best one afterwards.",
        "The best LoRA is often a little before the last epoch; saving every 1-2 epochs lets you try several in your "
        "UI and keep the best. Files are named NAME-000004.safetensors; save_last_n_epochs limits disk use.",
        level="basic", minimum=1,
        title="Save a copy every N epochs",
    ),
    Option("save_every_n_steps", INT, None, "saving", "Also save a numbered copy every N steps.",
           "Useful for long runs with few epochs, or when you train by steps. Files are named "
           "NAME-step00000500.safetensors; save_last_n_steps limits how many are kept.", minimum=1),
    Option("save_last_n_epochs", INT, None, "saving",
           "Keep only the last N numbered epoch saves (older ones of THIS run are removed).",
           "Saves disk space on long runs: 3 keeps the three newest numbered epoch files. The final LoRA "
           "and files of earlier runs are never removed; leave it empty to keep every save while you "
           "still need to compare.", minimum=1),
    Option("save_last_n_steps", INT, None, "saving",
           "Keep only the numbered step saves of the last N steps.",
           "Counts steps, not files: with save_every_n_steps 200 and this set to 600, only the saves "
           "from the last 600 steps (three files) are kept. The final LoRA is never removed.", minimum=1),
    Option(
        "overwrite_output", BOOL, False, "saving",
        "Allow replacing LoRA files that an earlier run left under the same name.",
        "Off by default: a run refuses to start rather than overwrite your earlier LoRA.",
    ),
    Option("events_file", PATH, None, "saving",
           "Where the JSON-lines progress events go (default: <output_dir>/<output_name>_events.jsonl).",
           "The notebook and other tools read training progress (loss, saves, samples, warnings) from this file. "
           "The default location is fine; change it only if another program expects the events elsewhere."),
    Option("no_metadata", BOOL, False, "saving", "Write no training metadata into the file.",
           "By default the LoRA records its training settings, which UIs can show and which help you reproduce it. "
           "Turn this on only to hide that information; the file still loads everywhere."),
    Option("training_comment", STR, None, "saving", "A note stored in the file's metadata.",
           "Free text for yourself or for users, e.g. the dataset version or what you changed in this run. UIs that "
           "show LoRA metadata display it."),
    Option("metadata_title", STR, None, "saving", "Title stored in the file (modelspec.title).",
           "Some UIs and model sites show it as the LoRA's display name. When empty, output_name is used."),
    Option("metadata_author", STR, None, "saving", "Author stored in the file (modelspec.author).",
           "Your name or handle, so the file says who made it even after it is shared or renamed. Optional."),
    Option("metadata_description", STR, None, "saving", "Description stored in the file.",
           "A short description of what the LoRA does and how to use it (trigger words, suggested weight). "
           "Optional; it travels with the file when it is shared."),
    Option("metadata_license", STR, None, "saving", "License stored in the file.",
           "The terms others may use the LoRA under (for example the base model's licence, or CC BY-NC). Optional, "
           "but useful if you publish the file."),
    Option("metadata_tags", STR, None, "saving", "Comma-separated tags stored in the file.",
           "Keywords like 'character, anime' that UIs and sites can use to sort or search. Optional."),
    Option("metadata_trigger_phrase", STR, None, "saving",
           "Trigger words stored in the file (modelspec.trigger_phrase); defaults to the class tokens.",
           "Tells users and UIs which words activate the LoRA. Leave it empty to use the class tokens of your "
           "folders (the 'mychar' of 10_mychar), or set it when your trigger words are in the caption files "
           "instead."),
    Option("save_state", BOOL, False, "state",
           "Also save the full training state (optimizer, schedule, random states) with each numbered save.",
           "A state folder (NAME-000004-state) lets resume continue exactly where the run was, learning-rate "
           "schedule included. States are several times the LoRA's size."),
    Option("save_state_on_train_end", BOOL, False, "state", "Save the full training state at the end (NAME-state).",
           "Lets you continue later with resume (for example to add epochs) exactly where the run ended, optimizer "
           "and schedule included. A state is several times the LoRA's size; turn it on if you may extend training."),
    Option("save_last_n_epochs_state", INT, None, "state", "Keep only this run's last N epoch states.",
           "States are large, so keeping only the newest 1-2 saves a lot of disk space. Only applies "
           "with save_state; the LoRA files themselves are pruned separately by save_last_n_epochs.", minimum=1),
    Option("resume", PATH, None, "state", "Continue from a saved state folder (NAME-...-state).",
           "Use the same settings as the run that saved it; the step and epoch counters, the learning-rate "
           "schedule and the data order continue where they were. Stopping a run (Stop button, Ctrl+C) always "
           "saves a state to resume from."),
)

SAMPLE_OPTIONS = (
    Option("sample_prompts", PATH, None, "sampling",
           "A prompts file for preview images: .txt (one prompt a line, with --n --w --h --d --l --s --ss), "
           "or .toml/.json (prompt, negative_prompt, width, height, seed, scale, sample_steps).",
           "Images go to <output_dir>/sample/<output_name>_<step>_<prompt number>.png. Unset width/height take "
           "the training resolution, an unset seed is seed + the prompt's number, so each prompt keeps its noise "
           "from one sample to the next and you see only what training changed.",
           level="basic", title="Sample prompts file"),
    Option("sample_every_n_epochs", INT, None, "sampling", "Make preview images every N epochs.",
           "Previews let you watch the LoRA learn and spot overtraining (fried colours, stiff copies of the training "
           "images) without stopping. Every 1-2 epochs is common; needs sample_prompts, and each round costs some "
           "time.",
           level="basic", minimum=1, title="Sample images every N epochs"),
    Option("sample_every_n_steps", INT, None, "sampling", "Make preview images every N steps.",
           "May be combined with sample_every_n_epochs; a step both ask for is drawn once.", minimum=1),
    Option("sample_at_first", BOOL, False, "sampling",
           "Make preview images before training starts, to compare against.",
           "Shows what the base model draws for your prompts before any training, so later previews show exactly "
           "what the LoRA changed. It costs one extra round of samples."),
    Option("sample_sampler", CHOICE, "ddim", "sampling",
           "Sampler for preview images (a prompt's --ss overrides it).",
           "euler_a and dpmsolver++ give good images in 20-30 steps; k_ names are aliases of the plain ones.",
           choices=SAMPLERS),
)

LOG_OPTIONS = (
    Option("log_with", CHOICE, None, "logging",
           "Log the loss and learning rates to TensorBoard, Weights & Biases, or both.",
           "wandb needs `pip install wandb` and the WANDB_API_KEY environment variable (never the config file). "
           "Setting only logging_dir means TensorBoard.",
           choices=("tensorboard", "wandb", "all")),
    Option("logging_dir", PATH, None, "logging",
           "Folder for the logs; each run writes to <logging_dir>/<log_prefix><output_name>_<date-time>.",
           "Empty: <output_dir>/logs. Point TensorBoard at this folder to compare runs."),
    Option("log_prefix", STR, None, "logging", "Prefix of each run's log folder name.",
           "Handy for grouping runs, e.g. 'test_' or 'v2_', so you can tell them apart or filter them in "
           "TensorBoard. Leave it empty to name folders after output_name only."),
    Option("log_tracker_name", STR, None, "logging",
           "Project name in Weights & Biases (default network_train).",
           "Runs with the same project name appear together in Weights & Biases, ready to compare. Only used when "
           "log_with is wandb or all."),
    Option("wandb_run_name", STR, None, "logging",
           "Run name in Weights & Biases (default: the log folder's name).",
           "Readable names such as 'rank16-lr1e-4' make runs easy to tell apart on the W&B dashboard. Only used "
           "when log_with is wandb or all."),
    Option("validation_split", FLOAT, 0.0, "validation",
           "Fraction of each folder's images held out of training to measure a validation loss (0.1 is usual).",
           "A folder of n images gives floor(n x split) images and keeps at least one for training. The score "
           "uses fixed noise at fixed timesteps, so runs with the same seed are directly comparable; a rising "
           "validation loss while the training loss falls is a sign of overfitting.",
           minimum=0, maximum=0.9),
    Option("validation_seed", INT, None, "validation",
           "Seed that picks the validation images and their noise (default: seed).",
           "Keeping it fixed means every run holds out the same images and scores them the same way, so "
           "validation losses of different runs are comparable. Change it only to check that results do "
           "not hinge on that choice.", minimum=0),
    Option("validate_every_n_steps", INT, None, "validation", "Validation loss every N steps.",
           "Only acts when validation_split holds out images. Each check is one pass over the held-out images, so "
           "every few hundred steps is plenty for most runs.",
           minimum=1),
    Option("validate_every_n_epochs", INT, None, "validation",
           "Validation loss every N epochs (every epoch when validation_split is set and neither is).",
           "Only acts when validation_split holds out images. Every 1 epoch is usual for LoRAs; compare the curve "
           "with your sample images when picking which saved epoch to keep.",
           minimum=1),
)
