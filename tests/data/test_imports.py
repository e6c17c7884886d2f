"""``arl_hf.data`` imports light: no datasets / librosa / soundfile / sklearn / av / scipy at import."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from arl_hf.data import available_datasets, modality_spec


def test_package_import_does_not_pull_heavy_dependencies():
    code = textwrap.dedent("""
        import sys, types, os
        # import the data package on its own (the parent package's own imports are not ours to test)
        pkg = types.ModuleType("arl_hf"); pkg.__path__ = [os.path.join(os.getcwd(), "arl_hf")]
        sys.modules["arl_hf"] = pkg
        import arl_hf.data as d
        _ = (d.load, d.get_audio_preset, d.register_dataset, d.MultimodalCollator, d.modality_spec, d.export_prepared)
        heavy = [m for m in ("datasets", "librosa", "soundfile", "sklearn", "av", "scipy") if m in sys.modules]
        print(",".join(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=__file__.rsplit("/tests/", 1)[0])
    assert out.stdout.strip() == ""


def test_registry_names_and_static_specs():
    assert available_datasets() == ["cremad", "ave", "kinetics_sounds", "mosi", "ucf101", "avdigits"]
    assert modality_spec("ucf101") == {"rgb": {"encoder": "timm:resnet18", "in_chans": 3},
                                       "flow": {"encoder": "timm:resnet18", "in_chans": 2}}
    assert set(modality_spec("mosi")) == {"audio", "visual", "text"}
    with pytest.raises(ValueError, match="unknown dataset 'vggsound'"):
        modality_spec("vggsound")
