"""Options table, part two: where the images are, how captions are read, buckets and caching.

Subset options (captions, repeats, augmentations) may appear in a dataset config's ``[general]``,
``[[datasets]]`` or ``[[datasets.subsets]]``, and in the training config, where they apply to the
``train_data_dir`` folders. Dataset options (resolution, buckets) likewise, one level up.
"""
from __future__ import annotations

from trainer.options.schema import (
    BOOL, DATASET, FLOAT, INT, PATH, RESOLUTION, STR, SUBSET, TRAIN, Option,
)

_TRAIN_DATASET = frozenset({TRAIN, DATASET})
_TRAIN_SUBSET = frozenset({TRAIN, DATASET, SUBSET})
_SUBSET_ONLY = frozenset({SUBSET})

DATA_OPTIONS = (
    Option(
        "train_data_dir", PATH, None, "data",
        "The folder that HOLDS your N_name image folders (not an image folder itself).",
        "Inside it, each sub-folder named like 10_mychar is one set of images repeated 10 times per epoch, "
        "with 'mychar' as the caption of any image that has no caption file. The most common mistake is "
        "pointing at 10_mychar itself instead of its parent.",
        level="basic",
        title="Dataset folder",
    ),
    Option(
        "reg_data_dir", PATH, None, "data",
        "Folder holding N_name folders of regularisation images (optional).",
        "Regularisation images of the class ('woman', 'dog') keep the model from forgetting what the class "
        "looks like in general. Most character LoRAs do fine without them. Their repeats are balanced so an "
        "epoch holds as many regularisation samples as training samples (an epoch becomes twice as long); "
        "extra ones are left out and named in a warning.",
        title="Regularisation images folder",
    ),
    Option(
        "dataset_config", PATH, None, "data",
        "A dataset TOML ([general], [[datasets]], [[datasets.subsets]]) instead of train_data_dir.",
        "Lets each folder have its own repeats, caption settings and resolution.",
        title="Dataset config file",
    ),
    Option(
        "resolution", RESOLUTION, [512, 512], "data",
        "Training resolution: 512 for SD1.5, 768 for SD2-768, 1024 for SDXL; one number or width,height.",
        "Images are resized into buckets of about this many pixels. Training above the base model's native "
        "resolution costs memory and rarely helps.",
        level="basic", minimum=32, maximum=4096, scopes=_TRAIN_DATASET,
        title="Training resolution",
    ),
    Option(
        "batch_size", INT, None, "data",
        "Images per step for this dataset (dataset config only; same as train_batch_size).",
        "Lets one dataset in a dataset TOML use its own batch size, e.g. a smaller one for a high-resolution set. "
        "Leave it unset to use train_batch_size; a bigger batch needs more VRAM in the same way.",
        scopes=frozenset({DATASET}), minimum=1,
    ),
    Option(
        "enable_bucket", BOOL, False, "buckets",
        "Sort images into aspect-ratio buckets instead of cropping everything square.",
        "Keeps whole images (no cut-off heads or feet) when your images are not square. Recommended.",
        level="basic", scopes=_TRAIN_DATASET,
        title="Keep aspect ratios (buckets)",
    ),
    Option(
        "min_bucket_reso", INT, 256, "buckets",
        "Smallest bucket side in pixels.",
        "No bucket gets a side shorter than this, which limits how thin a bucket can be for very tall or wide images "
        "(they are cropped instead). 256 is the common value for both SD1.5 and SDXL; keep it below the training "
        "resolution.",
        scopes=_TRAIN_DATASET, minimum=16,
        title="Smallest bucket side",
    ),
    Option(
        "max_bucket_reso", INT, 1024, "buckets",
        "Largest bucket side in pixels (2048 is usual for SDXL).",
        "No bucket gets a side longer than this; it must be at least the training resolution. 1024 is usual for "
        "SD1.5 and 2048 for SDXL, so that tall or wide images keep their shape instead of being cropped.",
        scopes=_TRAIN_DATASET, minimum=16,
        title="Largest bucket side",
    ),
    Option(
        "bucket_reso_steps", INT, 64, "buckets",
        "Bucket sides are multiples of this (64 is safest; 32 gives closer fits).",
        "Smaller steps give more bucket sizes, so images need less cropping, but fewer images share each bucket. 64 "
        "matches how the model shrinks images internally and is the safe choice; it must be a multiple of 8.",
        scopes=_TRAIN_DATASET, minimum=8,
    ),
    Option(
        "bucket_no_upscale", BOOL, False, "buckets",
        "Never enlarge a small image to fill its bucket; give it a smaller bucket instead.",
        "Upscaled small images teach blur. With this on, a 400x600 image trains at about 384x576.",
        scopes=_TRAIN_DATASET,
    ),
    Option(
        "strict_images", BOOL, False, "data",
        "Refuse to start when any image cannot be decoded (default: skip it and name it).",
        "When off, broken or unreadable files are skipped with a warning that lists them, and training goes on "
        "without them. Turn it on when you want to be sure every image in your folders is really used.",
    ),
    Option(
        "image_dir", PATH, None, "data",
        "The image folder of one subset (dataset config only).",
        "Each [[datasets.subsets]] entry needs one: the folder that directly holds the images and their caption "
        "files. Unlike train_data_dir folders it needs no N_ prefix; set num_repeats instead.",
        scopes=_SUBSET_ONLY,
    ),
    Option(
        "num_repeats", INT, 1, "data",
        "How many times each image of this subset is seen per epoch.",
        "Balances sets of different sizes: 20 images x 10 repeats count as 200 per epoch.",
        scopes=_SUBSET_ONLY, minimum=1,
    ),
    Option(
        "class_tokens", STR, None, "captions",
        "Caption used for images that have no caption file (the 'mychar' of 10_mychar).",
        "Typically your trigger word, optionally with a class ('mychar woman'). Images that have a caption file use "
        "that instead, so this only matters for uncaptioned images.",
        scopes=_SUBSET_ONLY,
    ),
    Option(
        "is_reg", BOOL, False, "data",
        "This subset holds regularisation images (their loss is weighted by prior_loss_weight).",
        "Mark subsets of generic class images (not your subject) with it; they remind the model what the class "
        "normally looks like. Leave it off for the images the LoRA should learn; prior_loss_weight sets their "
        "weight.",
        scopes=_SUBSET_ONLY,
    ),
    Option(
        "caption_extension", STR, ".txt", "captions",
        "Extension of the caption files beside the images (.txt).",
        "sd-scripts' own default is .caption; almost every dataset tool writes .txt.",
        scopes=_TRAIN_SUBSET,
        title="Caption file extension",
    ),
    Option(
        "shuffle_caption", BOOL, False, "captions",
        "Shuffle the comma-separated tags of each caption every time it is used.",
        "Teaches the LoRA that tag order does not matter. Use keep_tokens to pin your trigger word first.",
        level="basic", scopes=_TRAIN_SUBSET,
        title="Shuffle caption tags",
    ),
    Option(
        "keep_tokens", INT, 0, "captions",
        "Keep the first N tags in place when shuffling or dropping tags (1 keeps the trigger word first).",
        "Usually 1 to keep the trigger word at the front (2 for trigger plus class). Tags are counted with "
        "caption_separator, so the trigger must be the first comma-separated item of every caption. 0 lets every tag "
        "move.",
        scopes=_TRAIN_SUBSET, minimum=0,
        title="Tags kept in front when shuffling",
    ),
    Option(
        "keep_tokens_separator", STR, "", "captions",
        "A marker (e.g. '|||') in captions: everything before it stays fixed, instead of keep_tokens.",
        "Handy when the fixed part has a different number of tags per image: in 'mychar, 1girl ||| smile, outdoors' "
        "the part before the marker stays put and the rest is shuffled. Leave it empty to use keep_tokens instead.",
        scopes=_TRAIN_SUBSET,
    ),
    Option(
        "caption_separator", STR, ",", "captions",
        "What separates tags in a caption.",
        "The comma is right for booru-style tag captions and most taggers. Shuffling, keep_tokens and tag dropout "
        "all split captions with it, so change it only if your captions use another delimiter.",
        scopes=_TRAIN_SUBSET,
    ),
    Option(
        "caption_prefix", STR, None, "captions",
        "Text put in front of every caption (e.g. your trigger word).",
        "Adds a trigger word without editing every caption file. It is joined to the caption with a space, so end it "
        "with a comma ('mychar,') if it should count as its own tag for keep_tokens and shuffling.",
        scopes=_TRAIN_SUBSET,
    ),
    Option(
        "caption_suffix", STR, None, "captions",
        "Text put after every caption.",
        "Useful for a tag every image should carry, such as a style name. It is joined with a space, so start it "
        "with a comma (', mystyle') if it should be a separate tag; it can be shuffled like the others.",
        scopes=_TRAIN_SUBSET,
    ),
    Option(
        "caption_dropout_rate", FLOAT, 0.0, "captions",
        "Fraction of steps an image is trained with an empty caption (0-1).",
        "A little (0.05) helps the LoRA work without its trigger word; too much weakens it.",
        scopes=_TRAIN_SUBSET, minimum=0, maximum=1,
    ),
    Option(
        "caption_dropout_every_n_epochs", INT, 0, "captions",
        "Every N-th epoch, train all images with empty captions (0: never).",
        "A coarser form of caption dropout: whole epochs teach the images with no caption at all. Rarely used for "
        "LoRAs; keep it at 0 unless you want the look to show up even without the trigger word.",
        scopes=_TRAIN_SUBSET, minimum=0,
    ),
    Option(
        "caption_tag_dropout_rate", FLOAT, 0.0, "captions",
        "Drop each tag (except kept ones) with this probability (0-1).",
        "0.05-0.1 keeps the LoRA from tying the concept to one particular tag.",
        scopes=_TRAIN_SUBSET, minimum=0, maximum=1,
    ),
    Option(
        "flip_aug", BOOL, False, "augmentation",
        "Randomly mirror images left-right.",
        "Doubles the variety of a small dataset; do not use it for asymmetric subjects (text, one-sided hair). "
        "Works with cache_latents (both orientations are cached).",
        scopes=_TRAIN_SUBSET,
        title="Mirror images (flip)",
    ),
    Option(
        "color_aug", BOOL, False, "augmentation",
        "Randomly shift colours a little (cannot be used with cached latents).",
        "A third of the time, the hue turns by up to 16 degrees or the gamma changes by up to 5%, as in "
        "sd-scripts. Rarely helps; avoid it when colours matter (a character's hair or eye colour).",
        scopes=_TRAIN_SUBSET,
    ),
    Option(
        "random_crop", BOOL, False, "augmentation",
        "Crop at a random position instead of the centre (cannot be used with cached latents).",
        "Only matters for images whose shape does not fit their bucket exactly: the part cut off changes "
        "each time instead of always being the edges.",
        scopes=_TRAIN_SUBSET,
    ),
    Option(
        "alpha_mask", BOOL, False, "augmentation",
        "Use the image's alpha channel as the loss mask: transparent areas are not learned.",
        "For cut-outs: the background does not end up in the LoRA. Images without transparency count fully. "
        "Turns the masked loss on for this subset (masked_loss does so for the whole run).",
        scopes=_TRAIN_SUBSET,
    ),
)

CACHE_OPTIONS = (
    Option(
        "cache_latents", BOOL, False, "caching",
        "Encode every image with the VAE once, before training, and keep the result in memory.",
        "Much faster training and less VRAM; incompatible with color_aug and random_crop.",
        level="basic",
        title="Pre-encode images once (cache latents)",
    ),
    Option(
        "cache_latents_to_disk", BOOL, False, "caching",
        "Keep the cached latents on disk too, so later runs reuse them.",
        "The cache is keyed by image content, resolution, flip and VAE, so a changed image is re-encoded.",
    ),
    Option(
        "cache_text_encoder_outputs", BOOL, False, "caching",
        "Encode every caption once and free the text encoders (needs a frozen text encoder).",
        "Saves a lot of VRAM for SDXL. Needs network_train_unet_only and no caption shuffling or dropout.",
        title="Cache text-encoder outputs",
    ),
    Option(
        "vae_batch_size", INT, 1, "caching",
        "Images per VAE call while caching latents.",
        "Only affects how fast the latent cache is built, not the LoRA itself. 1-4 is typical; larger values cache "
        "faster if VRAM allows, but SDXL at 1024 px needs much more memory per image.",
        minimum=1,
    ),
)
