"""PreprocessingRecord: parsed once, typed, written back as the same JSON; errors name the field."""

from __future__ import annotations

import json

import pytest

from arl_hf.data import PreprocessingRecord
from arl_hf.modeling.configuration import MultimodalConfig

RECORD = {"format": "arl_hf.data/1", "dataset": "avdigits", "builder_version": "1.1.0", "audio_preset": None,
          "frames": None, "label_names": ["0", "1"], "on_error": "raise", "options": {"k": 1},
          "splits": {"split_seed": 0, "validation_fraction": 0.15 / 0.85},
          "modalities": {"visual": {"kind": "image", "encoder": "timm:resnet18", "in_chans": 1, "shape": [1, 32, 32],
                                    "normalisation": {"mean": 0.5}},
                         "audio": {"kind": "spectrogram", "encoder": "timm:resnet18", "in_chans": 1}},
          "future_key": [1, 2]}


def test_round_trip_is_the_same_json_and_fields_are_typed():
    text = json.dumps(RECORD, sort_keys=True)
    rec = PreprocessingRecord.from_json(text)
    assert rec.to_json() == text and rec.to_dict() == RECORD
    assert list(PreprocessingRecord.from_dict(RECORD).modalities) == ["visual", "audio"]  # the given order
    assert rec.kinds() == {"audio": "spectrogram", "visual": "image"}
    assert rec.modalities["visual"].shape == [1, 32, 32] and rec.modalities["audio"].encoder == "timm:resnet18"
    assert rec.suggested_encoders() == {"visual": {"encoder": "timm:resnet18", "in_chans": 1},
                                        "audio": {"encoder": "timm:resnet18", "in_chans": 1}}
    assert rec.label_names == ["0", "1"] and rec.dataset_label() == "avdigits" and rec.default_num_frames == 1
    sparse = {"format": "arl_hf.data/1", "modalities": {"a": {"kind": "sequence", "input_dim": 4}}}
    assert PreprocessingRecord.from_dict(sparse).to_dict() == sparse  # absent keys stay absent
    assert PreprocessingRecord.from_dict(sparse).dataset_label("fallback") == "fallback"


@pytest.mark.parametrize("change, field", [
    ({"format": "other/1"}, r"record\['format'\]"),
    ({"modalities": {}}, r"record\['modalities'\]"),
    ({"modalities": {"a": {"kind": "waveform"}}}, r"modalities\['a'\]\['kind'\]"),
    ({"modalities": {"a": 3}}, r"modalities\['a'\]: expected a mapping"),
    ({"label_names": [0, 1]}, r"record\['label_names'\]"),
])
def test_errors_name_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        PreprocessingRecord.from_dict({**RECORD, **change})


def test_from_dataset_errors_and_find():
    import datasets

    plain = datasets.Dataset.from_dict({"x": [1]})
    with pytest.raises(ValueError, match=r"dataset.info.description: expected the arl_hf preprocessing record"):
        PreprocessingRecord.from_dataset(plain)
    assert PreprocessingRecord.find(plain) is None
    plain.info.description = json.dumps(RECORD)
    assert PreprocessingRecord.find(datasets.DatasetDict({"train": plain})).dataset == "avdigits"


def test_model_config_reads_the_record_of_its_data():
    cfg = MultimodalConfig(num_labels=2, preprocessing={"dataset": "avdigits", "data": RECORD})
    assert PreprocessingRecord.of_model_config(cfg).suggested_encoders()["visual"]["encoder"] == "timm:resnet18"
    assert PreprocessingRecord.of_model_config(MultimodalConfig(num_labels=2, preprocessing={"dataset": "x"})) is None
