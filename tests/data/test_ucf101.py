"""UCF-101 builder: official split lists, RGB from videos or frames, x/y flow layouts, bad input."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from datagen_arl import UCF_CLASSES, UCF_TEST_GROUPS, UCF_TRAIN_GROUPS

from arl_hf.data import MultimodalCollator, class_names, load, modality_spec, preprocessing_info


def test_videos_and_uv_flow(ucf_root, cache_dir):
    dsd = load("ucf101", ucf_root, cache_dir=cache_dir, frame_pool=4, image_size=16, validation_fraction=0.2)
    assert class_names(dsd) == UCF_CLASSES
    raw = {s: dsd[s].with_format(None) for s in dsd}
    assert len(raw["test"]) == 3 and {g for g in raw["test"]["group"]} == set(UCF_TEST_GROUPS)
    val_groups, train_groups = set(raw["validation"]["group"]), set(raw["train"]["group"])
    assert len(val_groups) == 1 and not val_groups & train_groups  # whole recording groups held out
    assert val_groups | train_groups == set(UCF_TRAIN_GROUPS)
    assert preprocessing_info(dsd)["splits"]["validation_groups"] == sorted(val_groups)
    ex = raw["train"][0]
    assert ex["labels"] == UCF_CLASSES.index(ex["id"].split("_")[1])
    assert len(ex["rgb"]) == 4 and len(ex["flow"]) == 4  # pool: 4 of the 5 frames
    x0 = np.asarray(ex["flow"][0]["x"], dtype=np.float32)
    assert x0.ndim == 2 and abs(x0.mean() - 100) < 4  # u/v folders: x image, grey 100 + i
    batch = MultimodalCollator.from_dataset(dsd)([dsd["test"][i] for i in range(3)])
    assert tuple(batch["rgb"].shape) == (3, 3, 3, 16, 16)
    assert tuple(batch["flow"].shape) == (3, 3, 2, 16, 16)
    assert float(batch["flow"].abs().max()) <= 1.0
    assert batch["labels"].tolist() == [0, 1, 2]
    assert modality_spec(dsd)["flow"] == {"encoder": "timm:resnet18", "in_chans": 2}


def test_frames_and_tsn_flow(ucf_frames_root, cache_dir):
    dsd = load("ucf101", ucf_frames_root, cache_dir=cache_dir, transform=False)
    rec = preprocessing_info(dsd)["options"]
    assert rec["rgb_source"] == "frames" and rec["flow_layout"] == "flow_x_/flow_y_ files"
    ex = dsd["test"][0]
    assert len(ex["rgb"]) == 5 and len(ex["flow"]) == 5
    ys = [float(np.asarray(f["y"], dtype=np.float32).mean()) for f in ex["flow"]]
    assert np.allclose(ys, [150, 151, 152, 153, 154], atol=3)


def test_train_flip_negates_horizontal_flow(ucf_frames_root, cache_dir):
    from arl_hf.data import MultimodalTransform

    dsd = load("ucf101", ucf_frames_root, cache_dir=cache_dir, transform=False)
    batch = dsd["train"].with_format(None)[:1]
    tr = MultimodalTransform({"flow": {"kind": "flow"}}, train=True, num_frames=1, image_size=8,
                             scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3), seed=0)
    means = sorted(round(float(tr(batch)["flow"][0][0, 0].mean()), 2) for _ in range(12))
    # x flow grey ~100-104 -> (v/255 - 0.5)/0.5 ~ -0.2; mirrored motion gives ~ +0.2
    assert means[0] < -0.1 and means[-1] > 0.1


def test_bad_inputs(ucf_frames_root, tmp_path):
    root = str(tmp_path / "raw")
    shutil.copytree(ucf_frames_root, root)
    os.remove(os.path.join(root, "ucfTrainTestlist", "testlist01.txt"))
    with pytest.raises(FileNotFoundError, match="test split list not found: .*testlist01.txt"):
        load("ucf101", root, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="split_id: expected 1, 2 or 3"):
        load("ucf101", root, cache_dir=str(tmp_path / "c"), split_id=4)
    shutil.rmtree(root)
    shutil.copytree(ucf_frames_root, root)
    with open(os.path.join(root, "ucfTrainTestlist", "trainlist01.txt"), "a") as fh:
        fh.write("Basketball/v_Basketball_g20_c01.avi 3\n")
    with pytest.raises(ValueError, match="label index 3 disagrees with class folder 'Basketball'"):
        load("ucf101", root, cache_dir=str(tmp_path / "c"))
    shutil.rmtree(root)
    shutil.copytree(ucf_frames_root, root)
    os.remove(os.path.join(root, "flow", "v_YoYo_g01_c01", "flow_y_00003.jpg"))
    with pytest.raises(ValueError, match="v_YoYo_g01_c01: 5 x-flow frames but 4 y-flow frames"):
        load("ucf101", root, cache_dir=str(tmp_path / "c"))
    shutil.rmtree(os.path.join(root, "flow", "v_YoYo_g01_c01"))
    with pytest.raises(FileNotFoundError, match="optical-flow folder not found: .*v_YoYo_g01_c01"):
        load("ucf101", root, cache_dir=str(tmp_path / "c"))
