"""Options table, part one: the base model, the network, the optimizer and the learning-rate schedule."""
from __future__ import annotations

from trainer.options.schema import (
    BOOL, CHOICE, FLOAT, FLOAT_LIST, INT, NUMBER, PATH, STR, STR_LIST, Option,
)

OPTIMIZERS = (
    "AdamW", "AdamW8bit", "PagedAdamW8bit", "Adafactor", "Prodigy", "Lion", "Lion8bit", "SGDNesterov",
    "DAdaptAdam", "DAdaptLion", "DAdaptAdaGrad", "DAdaptAdan", "DAdaptSGD", "CAME",
    "AdamWScheduleFree", "RAdamScheduleFree",
)
SCHEDULERS = (
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
    "adafactor", "rex",
)

MODEL_OPTIONS = (
    Option(
        "pretrained_model_name_or_path", PATH, None, "model",
        "The base model: a diffusers folder, a Hugging Face repo id, or one .safetensors/.ckpt file.",
        "The model your LoRA is trained against, and the one it works best with afterwards. A LoRA trained "
        "on an SDXL-family model (Pony, Illustrious, NoobAI, Animagine) works on that family only. The "
        "architecture (SD1, SD2, SDXL) is detected from the weights.",
        level="basic",
        title="Base model file",
    ),
    Option(
        "model_config", PATH, None, "model",
        "A local diffusers folder (configs and tokenizers) or repo id used to load a single-file model.",
        "Single-file checkpoints hold weights only. The configs and tokenizer files come from this folder, "
        "which makes loading work offline. Leave empty to use the configs bundled with the trainer.",
    ),
    Option(
        "v2", BOOL, False, "model",
        "The base model is Stable Diffusion 2.x.",
        "Detected from the weights when possible; set it for SD2 models whose weights do not say so.",
    ),
    Option(
        "v_parameterization", BOOL, False, "model",
        "The base model predicts velocity (v-prediction): SD2 768-v, NoobAI v-pred and similar.",
        "Must match how the base model was trained. A v-pred model trained as epsilon (or the reverse) gives "
        "washed-out or fried results. The model presets set it for you.",
        title="v-prediction model",
    ),
    Option(
        "zero_terminal_snr", BOOL, False, "model",
        "Rescale the noise schedule so the last timestep is pure noise (for v-pred models trained that way).",
        "Use it together with v_parameterization for models trained with zero terminal SNR (NoobAI v-pred).",
        title="Zero terminal SNR",
    ),
    Option(
        "vae", PATH, None, "model",
        "A separate VAE file or folder to use instead of the one inside the base model.",
        "For SDXL in fp16 use the fp16-fix VAE: the stock SDXL VAE overflows to NaN (black images) in fp16.",
        title="Separate VAE file",
    ),
    Option(
        "no_half_vae", BOOL, False, "model",
        "Keep the VAE in full precision even when training in fp16/bf16.",
        "Avoids NaN latents with the stock SDXL VAE in fp16, at the cost of some memory.",
        title="Full-precision VAE",
    ),
    Option(
        "clip_skip", INT, None, "model",
        "Use the output of the N-th layer from the end of the text encoder (2 for anime SD1.5 models).",
        "1 (or empty) uses the last layer. Anime SD1.5 models (NovelAI lineage) were trained with 2. SDXL "
        "always uses the penultimate layer, so leave it empty there.",
        minimum=1, maximum=12,
        title="CLIP skip",
    ),
    Option(
        "max_token_length", INT, None, "model",
        "Longest caption in tokens: 75 (default), 150 or 225, encoded in chunks of 75.",
        "Long tag lists get cut at 75 tokens; 150 or 225 keep more of them at some speed cost.",
        choices=(75, 150, 225),
    ),
    Option(
        "xformers", BOOL, False, "model",
        "Use xformers memory-efficient attention (CUDA only).",
        "PyTorch's built-in scaled-dot-product attention is used by default and is as fast on current GPUs.",
        needs_cuda=True, implemented=False,
    ),
    Option(
        "sdpa", BOOL, False, "model",
        "Use PyTorch's scaled-dot-product attention (always on in this trainer).",
        "Accepted for compatibility with sd-scripts configs; the trainer always uses it.",
    ),
    Option(
        "fp8_base", BOOL, False, "model",
        "Store the frozen base model in fp8 to save memory (CUDA only).",
        "Halves the memory of the frozen weights on GPUs that support fp8, at a small quality cost.",
        needs_cuda=True, implemented=False,
    ),
)

NETWORK_OPTIONS = (
    Option(
        "network_module", CHOICE, "networks.lora", "network",
        "Which kind of adapter to train: plain LoRA/LoCon, a LyCORIS algorithm, or DyLoRA.",
        "networks.lora is the classic LoRA (add conv_dim to network_args for LoCon). lycoris.kohya trains the "
        "LyCORIS algorithm chosen with algo= in network_args: locon, loha, lokr, ia3, glora, diag-oft, boft or "
        "full (plain fine-tuning saved as a difference); dora_wd=True adds DoRA to locon, loha and lokr. Its "
        "preset= picks the layers: full (default: kohya's LoCon set), full-lin, attn-mlp (kohya's LoRA set), "
        "attn-only, unet-only, unet-transformer-only, unet-convblock-only, or a preset .toml file. "
        "networks.dylora trains every rank up to network_dim at once (unit=N sets the step) and saves a plain "
        "LoRA.",
        level="basic",
        choices=("networks.lora", "lycoris.kohya", "networks.dylora"),
        labels=(("networks.lora", "LoRA / LoCon"), ("lycoris.kohya", "LyCORIS"), ("networks.dylora", "DyLoRA")),
        title="Network type",
    ),
    Option(
        "network_dim", INT, 16, "network",
        "The LoRA's rank: how much it can learn. 8-32 for characters and styles; higher means bigger files.",
        "Rank 16 is a good start for a character, 32 for a detailed style. A higher rank learns more detail "
        "but also more noise, and the file grows linearly (an SDXL rank-32 LoRA is about 220 MB in fp16).",
        level="basic", minimum=1, maximum=1024,
        title="Network size (dim)",
    ),
    Option(
        "network_alpha", FLOAT, 1.0, "network",
        "Scales the LoRA's effect: the update is multiplied by alpha / dim. Often dim/2 or 1.",
        "With alpha = dim the scale is 1. With alpha = 1 and dim = 16 the scale is 1/16, so the learning rate "
        "must be higher to compensate. If you change dim, keep alpha/dim the same to keep the same behaviour.",
        level="basic", minimum=0,
        title="Network alpha (strength scale)",
    ),
    Option(
        "network_args", STR_LIST, [], "network",
        'Extra network settings as "key=value" items, e.g. ["conv_dim=8", "conv_alpha=4"] or ["algo=loha"].',
        "networks.lora: conv_dim/conv_alpha add the ResNet convolutions (LoCon). lycoris.kohya: algo, preset, "
        "conv_dim/conv_alpha (default network_dim/network_alpha, as in LyCORIS), dora_wd, use_tucker, "
        "use_scalar, train_norm, dropout, rank_dropout, module_dropout, rank_dropout_scale, factor, "
        "decompose_both, full_matrix, unbalanced_factorization (LoKr), constraint, rescaled (OFT/BOFT), "
        "rs_lora, bypass_mode. networks.dylora: unit, conv_dim, conv_alpha. Unknown keys are refused.",
        title="Extra network settings",
    ),
    Option(
        "network_dropout", FLOAT, None, "network",
        "Drop this fraction of the LoRA's inner activations during training (0-0.5), against overfitting.",
        "0.1 is a common value; it slows learning a little.",
        minimum=0, maximum=1,
    ),
    Option(
        "network_weights", PATH, None, "network",
        "Start from an existing LoRA file instead of from scratch (continue training).",
        "The file must have been trained on the same architecture with the same network type and rank.",
    ),
    Option(
        "network_train_unet_only", BOOL, False, "network",
        "Train the UNet only and leave the text encoder(s) alone.",
        "Usual for SDXL: it saves memory, allows caching the text-encoder outputs, and rarely costs quality.",
        title="Train the image model only (UNet)",
    ),
    Option(
        "network_train_text_encoder_only", BOOL, False, "network",
        "Train the text encoder(s) only.",
        "Rarely useful on its own; mostly for experiments.",
    ),
    Option(
        "dim_from_weights", BOOL, False, "network",
        "Take network_dim from the file given in network_weights.",
        "Meant for continuing from an existing LoRA without having to know its rank. It is not implemented yet, so "
        "set network_dim (and network_alpha) to the values the file was trained with; a mismatch fails to load.",
        implemented=False,
    ),
    Option(
        "scale_weight_norms", FLOAT, None, "network",
        "Cap each LoRA module's weight norm at this value after every step (1.0 is typical).",
        "Keeps the LoRA from overpowering the base model and makes it mix better with other LoRAs. Each "
        "module whose update (up x down x alpha/dim) is larger is scaled down to the cap; the step events "
        "report how many were.",
        minimum=0,
    ),
)

OPTIMIZER_OPTIONS = (
    Option(
        "optimizer_type", CHOICE, "AdamW", "optimizer",
        "The optimizer. AdamW8bit saves memory on CUDA; Prodigy and DAdapt* find the learning rate themselves.",
        "AdamW is the safe default. AdamW8bit behaves the same with much less memory (needs bitsandbytes and "
        "CUDA). Prodigy and the DAdapt family are learning-rate-free: set learning_rate to 1. Adafactor and CAME "
        "are the most memory-frugal. AdamWScheduleFree and RAdamScheduleFree need no decaying schedule (use "
        "lr_scheduler constant). Any 'module.Class' path to a torch optimizer also works.",
        level="basic", choices=OPTIMIZERS, allow_class_path=True,
        title="Optimizer",
    ),
    Option(
        "optimizer_args", STR_LIST, [], "optimizer",
        'Optimizer settings as "key=value" items, e.g. ["weight_decay=0.01", "betas=0.9,0.99"].',
        "Values are read as numbers, booleans, or comma-separated tuples where that fits.",
        title="Extra optimizer settings",
    ),
    Option(
        "learning_rate", FLOAT, 1e-4, "optimizer",
        "How big each update is. 1e-4 for LoRA with AdamW; 1 for Prodigy/DAdapt.",
        "Too high: the LoRA 'fries' (oversaturated, distorted) within a few epochs. Too low: it never learns "
        "the concept. unet_lr and text_encoder_lr override it for their parts.",
        level="basic", minimum=0,
        title="Learning rate",
    ),
    Option(
        "unet_lr", FLOAT, None, "optimizer",
        "Learning rate for the UNet part (defaults to learning_rate).",
        "1e-4 to 5e-4 for AdamW, depending on alpha/dim.",
        level="basic", minimum=0,
        title="Learning rate of the image model (UNet)",
    ),
    Option(
        "text_encoder_lr", FLOAT_LIST, None, "optimizer",
        "Learning rate for the text encoder(s); one value, or two for SDXL's two encoders.",
        "Usually half to a tenth of the UNet's. 0 freezes the text encoder's LoRA.",
        level="basic", minimum=0,
        title="Learning rate of the text encoder",
    ),
    Option(
        "max_grad_norm", FLOAT, 1.0, "optimizer",
        "Clip gradients to this norm (0 disables clipping).",
        "1.0 guards against rare huge updates.",
        minimum=0,
    ),
    Option(
        "fused_backward_pass", BOOL, False, "optimizer",
        "Step Adafactor inside the backward pass to save memory (Adafactor only).",
        "Each weight is updated as soon as its gradient is ready and the gradient is freed at once, so the "
        "gradients never all exist together. Needs optimizer_type Adafactor, gradient_accumulation_steps 1 and "
        "no fp16; max_grad_norm then clips each weight's gradient on its own.",
    ),
)

SCHEDULER_OPTIONS = (
    Option(
        "lr_scheduler", CHOICE, "constant", "scheduler",
        "How the learning rate changes over training: constant, cosine, linear, ...",
        "constant is simple and predictable; cosine lowers the rate smoothly towards the end, which often "
        "gives a cleaner final epoch; cosine_with_restarts repeats that lr_scheduler_num_cycles times. rex "
        "stays high longer, then falls fast ((1-z)/(1-z/2) of the way z through, restarting "
        "lr_scheduler_num_cycles times). adafactor lets the Adafactor optimizer pick its own rate.",
        level="basic", choices=SCHEDULERS,
        title="Learning-rate schedule",
    ),
    Option(
        "lr_warmup_steps", NUMBER, 0, "scheduler",
        "Raise the learning rate from 0 over this many steps (or this fraction of all steps, if below 1).",
        "A short warmup (about 5% of the steps) steadies the start, especially with Adam-type optimizers.",
        minimum=0,
        title="Learning-rate warm-up",
    ),
    Option(
        "lr_scheduler_num_cycles", INT, 1, "scheduler",
        "Number of cycles for cosine_with_restarts and rex (each restarts at the full rate).",
        "Only used by cosine_with_restarts and rex; 1 means a single decay with no restarts, which suits most LoRAs. "
        "Each restart jumps back to the full learning rate, so a few cycles (2-4) only make sense on longer runs.",
        minimum=1,
    ),
    Option(
        "lr_scheduler_power", FLOAT, 1.0, "scheduler",
        "Power of the polynomial schedule (1 is linear decay).",
        "Only used when lr_scheduler is polynomial. 1 falls in a straight line; above 1 the rate drops quickly at "
        "first and then levels off, below 1 it stays high longer and falls near the end.",
        minimum=0,
    ),
    Option(
        "lr_scheduler_type", STR, None, "scheduler",
        "A scheduler class path (module.Class) to use instead of lr_scheduler.",
        "A bare class name means torch.optim.lr_scheduler (e.g. StepLR). It is built as "
        "Class(optimizer, **lr_scheduler_args) and stepped once per update; lr_warmup_steps cannot be added.",
    ),
    Option(
        "lr_scheduler_args", STR_LIST, [], "scheduler",
        'Arguments for lr_scheduler_type as "key=value" items, e.g. ["step_size=100", "gamma=0.5"].',
        "Only read together with lr_scheduler_type; the keys are that class's own constructor arguments, and setting "
        "them without lr_scheduler_type is refused. Leave it empty for the built-in lr_scheduler choices.",
    ),
)
