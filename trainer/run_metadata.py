"""Fill the LoRA metadata from a prepared session: what was trained, on what, how far."""
from __future__ import annotations

from trainer.data.blueprint import SUBSET_FIELDS
from trainer.maths import warmup_steps
from trainer.saving.metadata import DatasetInfo, LoraMetadataInput, SubsetInfo

# Subset settings worth recording in ss_datasets (image_dir, repeats and class tokens have their own fields).
_RECORDED = tuple(name for name in SUBSET_FIELDS if name not in ("image_dir", "num_repeats", "class_tokens", "is_reg"))


def _datasets(session) -> tuple[DatasetInfo, ...]:
    scan = session.scan
    infos = []
    for dataset_index, dataset in enumerate(session.datasets):
        subsets = []
        for subset_index, subset in enumerate(dataset.subsets):
            count = scan.subset_image_counts.get((dataset_index, subset_index), 0)
            folder = subset.image_dir.rstrip("/").split("/")[-1]
            subsets.append(SubsetInfo(
                image_dir=subset.image_dir, num_repeats=subset.num_repeats, img_count=count,
                class_tokens=subset.class_tokens, is_reg=subset.is_reg,
                tag_frequency=scan.tag_frequency.get(folder, {}),
                settings={name: getattr(subset, name) for name in _RECORDED},
            ))
        buckets = {f"{w}x{h}": {"count": c.images} for (w, h), c in scan.bucket_table.items()}
        infos.append(DatasetInfo(
            subsets=subsets, resolution=dataset.resolution, batch_size=dataset.batch_size,
            enable_bucket=dataset.enable_bucket, min_bucket_reso=dataset.min_bucket_reso,
            max_bucket_reso=dataset.max_bucket_reso, bucket_info={"buckets": buckets},
        ))
    return tuple(infos)


def metadata_input(session, step: int, epoch: int, finished_at: float) -> LoraMetadataInput:
    """The metadata of a save made at ``step``/``epoch``."""
    config, model = session.config, session.model
    args = {}
    for item in config.network_args:
        key, _, value = str(item).partition("=")
        args[key.strip()] = value.strip()
    resolution = session.datasets[0].resolution if session.datasets else None
    return LoraMetadataInput(
        family=model.family, output_name=session.paths.output_name,
        network_dim=config.network_dim, network_alpha=config.network_alpha,
        learning_rate=config.learning_rate, training_started_at=session.started_at,
        training_finished_at=finished_at, v_parameterization=model.v_parameterization,
        network_module=config.network_module, network_args=args, network_dropout=config.network_dropout,
        unet_lr=config.unet_lr, text_encoder_lr=config.text_encoder_lr, optimizer=config.optimizer_type,
        lr_scheduler=config.lr_scheduler,
        lr_warmup_steps=warmup_steps(config.lr_warmup_steps, session.plan.total_steps),
        num_epochs=session.plan.epochs, max_train_steps=session.plan.total_steps, steps=step, epoch=epoch,
        num_train_images=session.scan.num_train_images, num_reg_images=session.scan.num_reg_images,
        num_batches_per_epoch=session.plan.batches_per_epoch,
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_accumulation_steps=config.gradient_accumulation_steps, max_grad_norm=config.max_grad_norm,
        seed=config.seed, clip_skip=config.clip_skip, mixed_precision=config.mixed_precision,
        noise_offset=config.noise_offset, min_snr_gamma=config.min_snr_gamma, sd_model_name=model.model_name,
        vae_name=model.vae_name, resolution=resolution, datasets=_datasets(session),
        training_comment=config.training_comment, title=config.metadata_title, author=config.metadata_author,
        description=config.metadata_description, license=config.metadata_license, tags=config.metadata_tags,
        trigger_phrase=config.metadata_trigger_phrase,
    )
