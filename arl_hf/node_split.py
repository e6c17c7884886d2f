"""Training sets already split across processes with ``datasets.distributed.split_dataset_by_node``:
how :class:`~arl_hf.ARLTrainer` recognises them and builds their training loader."""

from __future__ import annotations

from typing import Any, Optional


def node_split(dataset: Any) -> Optional[tuple]:
    """``(rank, world_size)`` of a ``datasets.IterableDataset`` made by ``split_dataset_by_node``
    (``datasets`` records it as the dataset's distributed config), else ``None``."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is optional for the core
        return None
    if not isinstance(dataset, datasets.IterableDataset):
        return None
    config = getattr(dataset, "_distributed", None)
    if config is None:
        return None
    return int(config.rank), int(config.world_size)


def node_split_train_dataloader(trainer: Any):
    """Training loader of a ``datasets.IterableDataset`` already split with
    ``split_dataset_by_node`` (e.g. :func:`arl_hf.data.streaming.stream_split`).

    accelerate would lose data twice over: with ``dispatch_batches`` (its default for an
    ``IterableDataset``) rank 0 reads only its own split and broadcasts it; without, it shards
    the dataset again across processes. So ``dispatch_batches=False`` is required and the loader
    is prepared as the single-process loader of this rank's split (device placement, epochs)."""
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader

    dataset = trainer.train_dataset
    rank, world = node_split(dataset)
    if world != trainer.args.world_size or rank != trainer.args.process_index:
        raise ValueError(
            f"train_dataset: split_dataset_by_node(rank={rank}, world_size={world}) does not match this process "
            f"(rank {trainer.args.process_index} of {trainer.args.world_size})")
    if trainer.args.world_size > 1 and trainer.accelerator.dispatch_batches is not False:
        raise ValueError(
            "accelerator_config.dispatch_batches: expected False for a training set split with "
            f"split_dataset_by_node, got {trainer.accelerator.dispatch_batches!r} (accelerate's default for an "
            "IterableDataset is True: rank 0 reads its own split and broadcasts it, and the other ranks' data is "
            "never seen); pass ARLConfig(accelerator_config={'dispatch_batches': False})")
    collator = trainer._get_collator_with_removed_columns(trainer.data_collator, description="training")
    loader = DataLoader(
        dataset, batch_size=trainer.train_batch_size, collate_fn=collator,
        num_workers=trainer.args.dataloader_num_workers,
        pin_memory=trainer.args.dataloader_pin_memory and trainer.args.device.type == "cuda",  # pinned only for CUDA
        persistent_workers=trainer.args.dataloader_persistent_workers,
        prefetch_factor=trainer.args.dataloader_prefetch_factor,
        multiprocessing_context=trainer.args.dataloader_multiprocessing_context)
    acc = trainer.accelerator
    return prepare_data_loader(
        loader, acc.device, num_processes=1, process_index=0, put_on_device=acc.device_placement,
        rng_types=acc.rng_types.copy(), dispatch_batches=False, non_blocking=acc.non_blocking,
        use_stateful_dataloader=acc.use_stateful_dataloader)
