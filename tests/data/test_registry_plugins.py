"""Datasets as plug-ins: a builder class decorated with ``@register_dataset`` in one file is found by
``arl_hf.data.load``, its class attributes are its defaults, and bad declarations are refused."""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap

import numpy as np
import pytest
from datagen_arl import write_jpg, write_wav

import arl_hf.data as data
from arl_hf.data.builder import DATASETS
from arl_hf.data.video_builder import VideoDatasetBuilder

BUILTIN = ["cremad", "ave", "kinetics_sounds", "mosi", "ucf101", "avdigits"]

#: a whole dataset in one file: clips as ``<split>/<class>/<clip>.wav`` + ``<split>/<class>/<clip>/*.jpg``
TINY_CLIPS = '''
import dataclasses
import os

import datasets

from arl_hf.data import ARLBuilderConfig, VideoDatasetBuilder, register_dataset


@dataclasses.dataclass
class TinyClipsConfig(ARLBuilderConfig):
    classes: str = "quiet,loud"


@register_dataset("tiny_clips")
class TinyClips(VideoDatasetBuilder):
    """Clips of <data_dir>/<train|test>/<class>/: <clip>.wav and a <clip>/ folder of frames."""

    BUILDER_CONFIG_CLASS = TinyClipsConfig
    VERSION = datasets.Version("0.1.0")
    DEFAULT_NUM_FRAMES = 1
    AUDIO_DURATION = 1.0
    FRAME_POOL = 2

    def _resolve(self):
        root = self._require_data_dir()
        names = self.config.classes.split(",")
        items = {}
        for split in ("train", "test"):
            items[split] = []
            for label, name in enumerate(names):
                folder = self._find(root, os.path.join(split, name), (), "class folder")
                for clip in sorted(n[:-4] for n in os.listdir(folder) if n.endswith(".wav")):
                    items[split].append({"id": f"{split}/{name}/{clip}", "label": label,
                                         "audio": os.path.join(folder, clip + ".wav"),
                                         "frames": os.path.join(folder, clip)})
        return self._validation_from_train(items), names, {"method": "folders"}, {}
'''


def _import_file(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def unregister():
    """Names registered by the test are removed again (the table is process-wide)."""
    names = []
    yield names
    data.available_datasets()  # the built-ins are registered
    for name in names:
        DATASETS.pop(name, None)
        sys.modules.pop(f"user_{name}", None)
    assert data.available_datasets() == BUILTIN


@pytest.fixture
def tiny_root(tmp_path) -> str:
    root = str(tmp_path / "tiny")
    k = 0
    for split, per_class in (("train", 4), ("test", 2)):
        for label, (name, freq) in enumerate((("quiet", 300.0), ("loud", 900.0))):
            for c in range(per_class):
                clip = os.path.join(root, split, name, f"c{c}")
                write_wav(clip + ".wav", seconds=0.6, freq=freq, seed=k)
                for j in range(4):
                    write_jpg(os.path.join(clip, f"{j:03d}.jpg"), value=40 * label + 10 * j)
                k += 1
    return root


def test_a_dataset_added_as_one_file_is_found_by_load(tmp_path, tiny_root, unregister):
    path = tmp_path / "tiny_clips.py"
    path.write_text(textwrap.dedent(TINY_CLIPS))
    unregister.append("tiny_clips")
    module = _import_file(str(path), "user_tiny_clips")

    assert data.available_datasets() == BUILTIN + ["tiny_clips"]
    assert data.builder_class("tiny_clips") is module.TinyClips and module.TinyClips.DATASET == "tiny_clips"
    assert data.modality_spec("tiny_clips") == {"audio": {"encoder": "timm:resnet18", "in_chans": 1},
                                                "visual": {"encoder": "timm:resnet18", "in_chans": 3}}
    dsd = data.load("tiny_clips", tiny_root, cache_dir=str(tmp_path / "cache"), validation_fraction=0.25, image_size=16)
    assert [len(dsd[s]) for s in ("train", "validation", "test")] == [6, 2, 4]
    assert data.class_names(dsd) == ["quiet", "loud"] and data.num_classes(dsd) == 2
    rec = data.preprocessing_info(dsd)
    # the class attributes are the defaults: scipy preset of AUDIO_DURATION s, FRAME_POOL frames
    assert rec["dataset"] == "tiny_clips" and rec["builder_version"] == "0.1.0"
    assert rec["audio_preset"]["name"] == "scipy" and rec["audio_preset"]["duration"] == 1.0
    assert rec["frames"]["pool_size"] == 2 and rec["frames"]["default_num_frames"] == 1
    ex = dsd["test"].with_format(None)[0]
    assert ex["id"] == "test/quiet/c0" and ex["labels"] == 0
    audio = np.asarray(ex["audio"])
    assert audio.shape == (257, 98) and len(ex["visual"]) == 2  # 1 s at 16 kHz, window 512, hop 159
    assert int(audio.mean(axis=1).argmax()) == 10  # the 300 Hz tone of a "quiet" clip: bin 300 / 31.25 Hz
    # pool of 2 of the 4 frames: centres of two halves, frames 1 and 3 (red channel 10 * j)
    reds = [float(np.asarray(im)[..., 0].mean()) for im in ex["visual"]]
    assert np.allclose(reds, [10, 30], atol=3)
    batch = data.MultimodalCollator.from_dataset(dsd)([dsd["train"][i] for i in range(3)])
    assert tuple(batch["audio"].shape) == (3, 1, 257, 98) and tuple(batch["visual"].shape) == (3, 1, 3, 16, 16)
    # its options are load's options; unknown ones are refused with the accepted list
    with pytest.raises(ValueError, match=r"tiny_clips: unknown option\(s\) \['split'\]; expected any of \['classes'\]"):
        data.load("tiny_clips", tiny_root, split="x")
    with pytest.raises(ValueError, match="data_dir: tiny_clips needs the folder of the raw download"):
        data.load("tiny_clips")


GOOD = dict(MODALITIES={"audio": {"kind": "spectrogram", "encoder": "timm:resnet18", "in_chans": 1}},
            AUDIO_PRESET="scipy")


@pytest.mark.parametrize("attributes, message", [
    ({"AUDIO_PRESET": None}, r"AUDIO_PRESET: a spectrogram modality needs a default audio preset, one of "
                             r"\['avdigits', 'fbank', 'ogm', 'scipy'\]; got None"),
    ({"AUDIO_PRESET": "mfcc"}, r"AUDIO_PRESET: .* got 'mfcc'"),
    ({"MODALITIES": {"x": {"kind": "sequence", "input_dim": 4}}}, r"AUDIO_PRESET: expected None \(no spectrogram"),
    ({"MODALITIES": {"x": {"kind": "video"}}}, r"MODALITIES\['x'\]\['kind'\]: expected one of .*got 'video'"),
    ({"MODALITIES": {}}, r"MODALITIES: expected a non-empty mapping"),
    ({"FRAME_POOL": -1}, r"FRAME_POOL: expected an int >= 0, got -1"),
    ({"DEFAULT_NUM_FRAMES": 0}, r"DEFAULT_NUM_FRAMES: expected an int >= 1, got 0"),
    ({"AUDIO_DURATION": -3.0}, r"AUDIO_DURATION: expected None or seconds > 0, got -3.0"),
    ({"CONFIGS": {"fast": "repeats=1"}}, r"CONFIGS: expected a mapping name -> options"),
])
def test_registration_refuses_declarations_load_cannot_use(attributes, message):
    cls = type("Bad", (VideoDatasetBuilder,), {**GOOD, **attributes})
    with pytest.raises(ValueError, match=r"dataset 'bad' \('Bad'\): " + message):
        data.register_dataset("bad")(cls)
    assert "bad" not in data.available_datasets()


def test_registration_refuses_a_class_that_is_no_builder():
    with pytest.raises(ValueError, match=r"dataset 'plain' \('Plain'\): expected a subclass of "
                                         r"arl_hf.data.builder.ARLBuilder"):
        data.register_dataset("plain")(type("Plain", (), {}))
    assert "plain" not in data.available_datasets()


def test_what_avdigits_needs_differently_is_declared_on_its_builder(tmp_path):
    cls = data.builder_class("avdigits")
    assert (cls.AUDIO_PRESET, cls.FIXED_AUDIO_PRESET, cls.REQUIRES_DATA_DIR) == ("avdigits", True, False)
    with pytest.raises(ValueError, match="preprocessing: avdigits has a fixed preset 'avdigits', got 'scipy'"):
        data.load("avdigits", preprocessing="scipy", cache_dir=str(tmp_path))
    # another duration than the preset's 1 s was built and then failed when read (64x64 stored, 64x128 declared)
    with pytest.raises(ValueError, match="audio_duration: avdigits has a fixed preset 'avdigits' of 1 s; "
                                         "expected None, got 2.0"):
        data.load("avdigits", audio_duration=2.0, num_samples=20, cache_dir=str(tmp_path))
    assert not os.path.exists(tmp_path / "arl_hf_avdigits")  # refused before anything was built


def test_class_names_refuse_a_dataset_without_class_labels():
    import datasets

    ints = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"x": [1.0, 2.0], "labels": [0, 1]})})
    expected = (r"dataset: expected a 'labels' column of class names \(a datasets.ClassLabel\), "
                r"got Value; columns: \['labels', 'x'\]")
    with pytest.raises(ValueError, match=expected):
        data.class_names(ints)
    unlabelled = datasets.Dataset.from_dict({"x": [1.0]})
    with pytest.raises(ValueError, match="got no labels column; columns: \\['x'\\]"):
        data.num_classes(unlabelled)
    named = datasets.Dataset.from_dict({"labels": [1, 0]}, features=datasets.Features(
        {"labels": datasets.ClassLabel(names=["cat", "dog", "eel"])}))
    assert data.class_names(named) == ["cat", "dog", "eel"] and data.num_classes(named) == 3
