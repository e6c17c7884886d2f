"""``load(name, ...)``: build (or reuse from the Arrow cache) a registered dataset; the transforms that go with it.

A dataset is a builder class registered with :func:`~arl_hf.data.register_dataset`; the
built-in ones (CREMA-D, AVE, Kinetics-Sounds, CMU-MOSI, UCF-101, AV-Digits) register when
their modules are imported, which the functions here do on first use. ``load`` returns a
plain ``DatasetDict`` (NumPy format: every ``datasets`` operation works on it); the per-split
:class:`~arl_hf.data.MultimodalTransform` is applied by the collator
(``MultimodalCollator.from_dataset(ds["train"])``), or bound to the splits with
:func:`attach_transforms` (``Dataset.with_transform``).

Also the per-dataset metadata helpers: :func:`modality_spec` (the encoder suggestion the
model config needs), :func:`modality_kinds`, :func:`preprocessing_info`,
:func:`class_names` and :func:`num_classes`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from ..log import get_logger
from .audio import AudioPreset, get_audio_preset
from .record import PreprocessingRecord

logger = get_logger(__name__)

__all__ = [
    "available_datasets",
    "builder_class",
    "register_dataset",
    "load",
    "attach_transforms",
    "make_transform",
    "is_transformed",
    "TRANSFORM_OPTIONS_ATTR",
    "DEFAULT_IMAGE_SIZE",
    "modality_spec",
    "modality_kinds",
    "preprocessing_info",
    "class_names",
    "num_classes",
]

#: height/width of the images the transform gives the model when ``image_size`` is not given
DEFAULT_IMAGE_SIZE = 224


def _datasets():
    """The table of registered datasets, with the built-in ones registered (first use imports them)."""
    # Each registers itself, in this order, which is the order of available_datasets().
    # isort: off
    from . import cremad, ave, kinetics_sounds, mosi, ucf101, avdigits  # noqa: F401
    # isort: on
    from .builder import DATASETS

    return DATASETS


def register_dataset(name: str) -> Callable[[type], type]:
    """Class decorator registering a dataset builder under ``name`` for :func:`load` (see
    :func:`arl_hf.data.builder.register_dataset`); the built-in datasets are registered first,
    so a class registered under a built-in name replaces it (with a warning)."""
    from .builder import register_dataset as register

    _datasets()
    return register(name)


def available_datasets() -> List[str]:
    """Names accepted by :func:`load`: the built-in datasets, then those registered since."""
    return list(_datasets())


def builder_class(name: str):
    """The ``datasets.GeneratorBasedBuilder`` subclass registered as ``name``.

    Raises:
        ValueError: no dataset of that name (the message lists the registered ones).
    """
    return _datasets().get_or_raise(name, "name")


def _unwrap(err: BaseException) -> BaseException:
    """The ValueError / FileNotFoundError a builder raised inside datasets' generation wrapper."""
    seen = err
    while seen is not None:
        if isinstance(seen, (ValueError, FileNotFoundError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return err


def load(
    name: str,
    data_dir: Optional[str] = None,
    *,
    preprocessing: Optional[Union[str, AudioPreset, Mapping[str, Any]]] = None,
    audio_duration: Optional[float] = None,
    num_frames: Optional[int] = None,
    image_size: Optional[int] = None,
    frame_pool: Optional[int] = None,
    frame_max_side: int = 0,
    split_seed: int = 0,
    validation_fraction: Optional[float] = None,
    on_error: str = "raise",
    cache_dir: Optional[str] = None,
    transform: bool = False,
    seed: int = 0,
    pool_sequences: bool = True,
    rebuild: bool = False,
    num_proc: Optional[int] = None,
    config: Optional[str] = None,
    **options: Any,
):
    """Build (first call) or reuse (later calls) a dataset; returns a ``DatasetDict``.

    The result has ``train``, ``validation`` (held out of train) and ``test`` splits, one
    column per modality, ``labels`` (``ClassLabel``) and ``id``. The Arrow cache lives in the
    HF datasets cache or ``cache_dir``; its key covers every argument that changes the
    stored data (preset and its parameters, frame pool, split seed and fraction, error
    policy, data_dir and the dataset options), so a second identical call is a cache hit.

    Args:
        name: a registered dataset (:func:`available_datasets`): ``cremad``, ``ave``,
            ``kinetics_sounds``, ``mosi``, ``ucf101``, ``avdigits`` or one registered with
            :func:`register_dataset`.
        data_dir: the raw download (not used by ``avdigits``, whose builder has
            ``REQUIRES_DATA_DIR = False``).
        preprocessing: audio preset name (``ogm``, ``scipy``, ``fbank``), record or
            :class:`AudioPreset`; default: the builder's ``AUDIO_PRESET`` (``scipy``; AV-Digits
            its own, which cannot be changed: ``FIXED_AUDIO_PRESET``).
        audio_duration: seconds the ``ogm``/``scipy`` presets tile/cut to (default: the
            builder's ``AUDIO_DURATION``: 3 s CREMA-D, 10 s AVE and Kinetics-Sounds).
        num_frames: frames per clip given to the model (a transform choice; not cached).
        image_size: frame height/width after the transform (default 224).
        frame_pool: frames kept per clip in the cache (default: the builder's ``FRAME_POOL``:
            3 CREMA-D, 6 AVE/KS, 8 UCF-101).
        frame_max_side: shrink stored frames (decoded video frames and frame files) so the
            shorter side is at most this; 0 (default) keeps their size. 256 halves the decode
            time of 480x360 frames (see docs/performance.md).
        split_seed, validation_fraction: the seeded held-out validation split (and seeded
            test split where the dataset has none); the fraction is the share of *train*
            held out (default 0.1; AV-Digits 0.15/0.85, i.e. 70/15/15 overall).
        on_error: ``"raise"`` (default) or ``"skip"`` bad raw files (the count is logged).
        cache_dir: Arrow cache root (default: the HF datasets cache).
        transform: ``False`` (default): the splits hold the stored columns (NumPy format) and
            ``MultimodalCollator.from_dataset(split)`` applies the split's transform; ``True``:
            the transforms are bound to the splits (:func:`attach_transforms`).
        num_frames, image_size, seed, pool_sequences: settings of the transforms (kept in the
            result's ``transform_options`` attribute, which ``MultimodalCollator.from_dataset``
            reads). ``seed``: seed of the training-time randomness; ``pool_sequences``: for
            feature sequences (MOSI), average over time -> ``(D,)``.
        rebuild: ignore an existing cache and rebuild from the raw files.
        num_proc: processes used to build (``datasets`` shards the clip lists).
        config: a named builder configuration of the dataset (the builder's ``CONFIGS``;
            ``avdigits``: ``"default"``, ``"bench"``, ``"main"``): a set of dataset options,
            which ``options`` given here override.
        **options: dataset-specific options (see each builder's config class), e.g.
            ``split="actor"`` for CREMA-D, ``class_list=...`` for Kinetics-Sounds.

    Raises:
        ValueError / FileNotFoundError naming the offending argument or file.
    """
    import datasets

    cls = builder_class(name)
    if config is not None:
        named = cls.CONFIGS
        if config not in named:
            raise ValueError(f"config: {name} has no configuration {config!r}; expected one of {sorted(named)}")
        options = {**named[config], **options}
    config_fields = {f.name for f in dataclasses.fields(cls.BUILDER_CONFIG_CLASS)}
    reserved = {"name", "version", "data_dir", "data_files", "description", "preset", "frame_pool",
                "frame_max_side", "split_seed", "validation_fraction", "on_error"}
    unknown = set(options) - (config_fields - reserved)
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {sorted(unknown)}; expected any of "
                         f"{sorted(config_fields - reserved)}")
    preset = _audio_preset(cls, name, preprocessing, audio_duration)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error: expected 'raise' or 'skip', got {on_error!r}")
    if data_dir is not None:
        data_dir = os.path.abspath(os.path.expanduser(str(data_dir)))
    elif cls.REQUIRES_DATA_DIR:
        raise ValueError(f"data_dir: {name} needs the folder of the raw download (see docs/data.md)")

    config_name = f"{preset.name}-v{preset.version}" if preset is not None else "features"
    kwargs: Dict[str, Any] = dict(
        preset=json.dumps(preset.to_dict(), sort_keys=True) if preset is not None else "",
        frame_pool=int(cls.FRAME_POOL if frame_pool is None else frame_pool),
        frame_max_side=int(frame_max_side),
        split_seed=int(split_seed),
        on_error=on_error,
    )
    if validation_fraction is not None:
        kwargs["validation_fraction"] = float(validation_fraction)
    kwargs.update(options)
    builder = cls(cache_dir=cache_dir, dataset_name=f"arl_hf_{name}", config_name=config_name,
                  data_dir=data_dir, **kwargs)
    mode = datasets.DownloadMode.FORCE_REDOWNLOAD if rebuild else datasets.DownloadMode.REUSE_DATASET_IF_EXISTS
    try:
        builder.download_and_prepare(download_mode=mode, num_proc=num_proc)
    except datasets.exceptions.DatasetGenerationError as err:
        cause = _unwrap(err)
        if cause is err:
            raise
        raise cause from err
    dsd = builder.as_dataset()
    dsd = datasets.DatasetDict({k: dsd[k] for k in ("train", "validation", "test")})
    return finish(dsd, transform, num_frames=num_frames, image_size=image_size, seed=seed,
                  pool_sequences=pool_sequences)


def _audio_preset(cls: Any, name: str, preprocessing: Any, audio_duration: Optional[float]) -> Optional[AudioPreset]:
    """The audio preset a build of ``cls`` uses: ``preprocessing`` / ``audio_duration`` or the
    builder's defaults (``AUDIO_PRESET``, ``AUDIO_DURATION``); ``None`` without raw audio."""
    if cls.AUDIO_PRESET is None:
        if preprocessing is not None or audio_duration is not None:
            raise ValueError(f"preprocessing: {name} has no raw audio (its audio, if any, is precomputed "
                             f"features); expected None, got {preprocessing!r}")
        return None
    if cls.FIXED_AUDIO_PRESET:
        default = get_audio_preset(cls.AUDIO_PRESET, duration=cls.AUDIO_DURATION)
        if preprocessing not in (None, cls.AUDIO_PRESET):
            raise ValueError(f"preprocessing: {name} has a fixed preset {cls.AUDIO_PRESET!r}, got {preprocessing!r}")
        if audio_duration is not None and float(audio_duration) != default.duration:
            raise ValueError(f"audio_duration: {name} has a fixed preset {cls.AUDIO_PRESET!r} of "
                             f"{default.duration:g} s; expected None, got {audio_duration!r}")
    spec = preprocessing if preprocessing is not None else cls.AUDIO_PRESET
    base = get_audio_preset(spec)
    duration = audio_duration if audio_duration is not None else (
        cls.AUDIO_DURATION if isinstance(spec, str) and base.duration is not None else None)
    return get_audio_preset(base, duration=duration)


#: attribute of a ``DatasetDict`` from :func:`load` / ``load_prepared`` holding its transform settings
TRANSFORM_OPTIONS_ATTR = "transform_options"


def finish(dsd, transform: bool, **options: Any):
    """The NumPy-formatted splits of ``dsd`` with the transform settings ``options`` recorded on the
    dict (``transform_options``), or with the transforms bound when ``transform``."""
    import datasets

    if transform:
        return attach_transforms(dsd, **options)
    out = datasets.DatasetDict({k: ds.with_format("numpy") for k, ds in dsd.items()})
    setattr(out, TRANSFORM_OPTIONS_ATTR, dict(options))
    return out


def make_transform(dataset: Any, train: bool, num_frames: Optional[int] = None, image_size: Optional[int] = None,
                   seed: Optional[int] = None, pool_sequences: Optional[bool] = None, decode_frames: str = "cpu",
                   strict: bool = True):
    """The :class:`MultimodalTransform` of a dataset (or :class:`PreprocessingRecord`): its modality
    kinds, ``num_frames`` defaulting to the recorded default, ``image_size`` to :data:`DEFAULT_IMAGE_SIZE` (224),
    ``seed`` to 0 and ``pool_sequences`` to ``True``."""
    from .transforms import MultimodalTransform

    record = dataset if isinstance(dataset, PreprocessingRecord) else PreprocessingRecord.from_dataset(dataset)
    nf = num_frames or record.default_num_frames
    size = image_size or DEFAULT_IMAGE_SIZE
    kinds = {k: {"kind": v} for k, v in record.kinds().items()}
    return MultimodalTransform(kinds, train=bool(train), num_frames=nf, image_size=size,
                               seed=0 if seed is None else int(seed),
                               pool_sequences=True if pool_sequences is None else bool(pool_sequences),
                               decode_frames=decode_frames, strict=strict)


def is_transformed(dataset: Any) -> bool:
    """Whether a split yields model-ready examples: a :class:`MultimodalTransform` set with
    ``with_transform`` (:func:`attach_transforms`), or mapped over a stream (``stream_split``)."""
    from .transforms import MultimodalTransform

    fmt = getattr(dataset, "format", None) or {}
    bound = (fmt.get("format_kwargs") or {}).get("transform")
    if isinstance(bound, MultimodalTransform) or isinstance(getattr(bound, "transform", None), MultimodalTransform):
        return True
    return bool(getattr(dataset, "transformed", False))


def attach_transforms(dsd, num_frames: Optional[int] = None, image_size: Optional[int] = None,
                      seed: Optional[int] = None, pool_sequences: Optional[bool] = None, decode_frames: str = "cpu"):
    """Bind :class:`MultimodalTransform` to each split with ``Dataset.with_transform``
    (augmentation on ``train`` only); returns a new ``DatasetDict``.

    The transform passes every other column through and skips absent modalities, so column
    queries (``ds["id"]``), ``select_columns`` and ``filter(input_columns=...)`` work on the
    bound splits. ``num_frames`` / ``image_size`` default to the dataset's recorded defaults.
    The collator of such splits only stacks (``MultimodalCollator.from_dataset``). Prefer the
    plain splits with one collator per split: ``save_to_disk``, ``to_iterable_dataset`` and
    ``map`` then see the stored columns.
    """
    import datasets

    record = PreprocessingRecord.from_dataset(dsd)
    return datasets.DatasetDict({
        split: ds.with_format(None).with_transform(make_transform(
            record, train=(split == "train"), num_frames=num_frames, image_size=image_size, seed=seed,
            pool_sequences=pool_sequences, decode_frames=decode_frames, strict=False))
        for split, ds in dsd.items()
    })


def bind_transforms_in_place(dsd, **options: Any) -> None:
    """Bind the transforms to the splits of ``dsd`` that hold stored columns, replacing them in
    ``dsd`` (augmentation on ``train`` only, as :func:`attach_transforms`); settings not given
    come from ``dsd.transform_options``.

    Each split is bound with :func:`arl_hf.data.batches.bind_row_transform`: the split gains a
    row-position column and ``with_transform`` extracts only it and the columns that are not
    fixed-shape arrays; the transform reads the arrays of each batch as NumPy views of the
    Arrow data (``with_transform`` alone would hand them over as nested Python lists). The
    transform receives the same values, so the batches are the same."""
    from .batches import bind_row_transform

    recorded = dict(getattr(dsd, TRANSFORM_OPTIONS_ATTR, None) or {})
    settings = {k: (v if v is not None else recorded.get(k)) for k, v in options.items()}
    for k, v in recorded.items():
        settings.setdefault(k, v)
    plain = {split: ds for split, ds in dsd.items() if not is_transformed(ds) and hasattr(ds, "with_transform")}
    if plain:
        record = PreprocessingRecord.from_dataset(dsd)
        for split, ds in plain.items():
            dsd[split] = bind_row_transform(ds, make_transform(record, train=(split == "train"), strict=False,
                                                               **settings))


def _first(dataset: Any):
    if hasattr(dataset, "info"):
        return dataset
    if isinstance(dataset, Mapping) and dataset:
        return next(iter(dataset.values()))
    raise ValueError(f"dataset: expected a Dataset, DatasetDict or dataset name, got {type(dataset).__name__}")


def preprocessing_info(dataset: Any) -> Dict[str, Any]:
    """The preprocessing record of a built dataset as a dict (see :class:`PreprocessingRecord`,
    ``PreprocessingRecord.from_dataset`` for the typed record).

    Raises:
        ValueError: the dataset was not built by :func:`load` (no record in its info).
    """
    return PreprocessingRecord.from_dataset(_first(dataset)).to_dict()


def modality_spec(dataset_or_name: Any) -> Dict[str, Dict[str, Any]]:
    """Encoder suggestion per modality, ready for ``MultimodalConfig(modalities=...)``.

    From a built dataset the values come from its record (MOSI's ``input_dim`` is the
    feature dimension found in the files); from a name they are the static defaults
    (MOSI's ``input_dim`` then is unknown and omitted).
    """
    if isinstance(dataset_or_name, str):
        from .record import ModalitySpec

        cls = builder_class(dataset_or_name)
        return {k: ModalitySpec.from_dict(k, v).encoder_spec() for k, v in cls.MODALITIES.items()}
    return PreprocessingRecord.from_dataset(_first(dataset_or_name)).suggested_encoders()


def modality_kinds(dataset_or_name: Any) -> Dict[str, str]:
    """Modality name -> storage kind (``spectrogram``, ``frames``, ``flow``, ``sequence``, ``image``)."""
    if isinstance(dataset_or_name, str):
        return {k: v["kind"] for k, v in builder_class(dataset_or_name).MODALITIES.items()}
    return PreprocessingRecord.from_dataset(_first(dataset_or_name)).kinds()


def class_names(dataset: Any) -> List[str]:
    """Class names of a dataset built by :func:`load` (``Dataset`` or ``DatasetDict``: the
    ``ClassLabel`` feature of ``labels``).

    Raises:
        ValueError: the dataset has no ``labels`` column of class names (a ``ClassLabel``).
    """
    features = getattr(_first(dataset), "features", None) or {}
    feature = features.get("labels")
    names = getattr(feature, "names", None)
    if not names:
        raise ValueError(f"dataset: expected a 'labels' column of class names (a datasets.ClassLabel), got "
                         f"{type(feature).__name__ if feature is not None else 'no labels column'}; "
                         f"columns: {sorted(features)}")
    return list(names)


def num_classes(dataset: Any) -> int:
    """Number of classes (the length of :func:`class_names`)."""
    return len(class_names(dataset))
