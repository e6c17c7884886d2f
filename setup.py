"""arl-hf: multimodal learning under modality imbalance with ARL (ICCV 2025), HuggingFace-native.

The metadata lives here (``pyproject.toml`` declares it ``dynamic`` and holds the build
system). The core installs what training, evaluation and the Hub round trips need; extras
follow the lazily imported libraries (docs/install.md lists what each one enables).
"""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))

with open(os.path.join(HERE, "arl_hf", "version.py"), encoding="utf-8") as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    README = f.read()

# transformers and datasets: private APIs are used (Trainer hooks such as _remove_unused_columns /
# _load_from_checkpoint / _hp_search_setup, datasets' formatter registry and card metadata
# helpers), so each is bounded to the major version it is tested with.
CORE = [
    "torch>=2.4",
    "torchvision>=0.19",
    "transformers>=5.0,<6",
    "datasets>=4.0,<6",
    "accelerate>=1.0",
    "timm>=1.0",
    "safetensors>=0.4",
    "huggingface_hub>=1.0",
    "numpy>=1.24",
    "pyarrow>=15",
    "pillow>=9",
    "pyyaml>=6",
]

SKLEARN = "scikit-learn>=1.3"  # seeded held-out splits of raw datasets, D&R clustering, linear probes
THREADPOOLCTL = "threadpoolctl>=3"  # one BLAS thread during feature extraction (a no-op without it)
EXTRAS = {
    # raw audio: decoding, spectrogram presets (librosa, soundfile, scipy), split hold-outs
    "audio": ["librosa>=0.10", "soundfile>=0.12", "scipy>=1.10", SKLEARN, THREADPOOLCTL],
    # video files (PyAV bundles FFmpeg), split hold-outs
    "video": ["av>=12", SKLEARN],
    # the embedded AV-Digits dataset: sklearn's digits, eSpeak NG speech, spectrograms
    "avdigits": [SKLEARN, "espeakng-loader>=0.2", "librosa>=0.10", "soundfile>=0.12", "scipy>=1.10", THREADPOOLCTL],
    # run plots and comparison figures
    "plots": ["matplotlib>=3.7"],
    # hyper-parameter search of the comparison protocol (Trainer.hyperparameter_search)
    "tune": ["optuna>=5.0"],
    # --report_to tensorboard
    "tensorboard": ["tensorboard>=2.14"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})
# the test and lint tools: bounded to the major versions the suite is tested with (constraints.txt pins them)
EXTRAS["dev"] = ["pytest>=9,<10", "hypothesis>=6,<7", "ruff>=0.15,<1", "peft>=0.22,<1"]

setup(
    name="arl-hf",
    version=VERSION,
    description="HuggingFace-native multimodal learning under modality imbalance with ARL (ICCV 2025)",
    long_description=README,
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    author="arl-hf contributors",
    packages=find_packages(include=["arl_hf", "arl_hf.*"]),
    package_data={"arl_hf": ["templates/*.md"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["arl-hf=arl_hf.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
