"""arl-hf: multimodal learning under modality imbalance with ARL (ICCV 2025), HuggingFace-native."""

from setuptools import find_packages, setup

RUNTIME = [
    "torch>=2.4",
    "torchvision>=0.19",
    "transformers>=5.0",
    "datasets>=4.0",
    "accelerate>=1.0",
    "timm>=1.0",
    "safetensors>=0.4",
    "huggingface_hub>=1.0",
    "librosa>=0.10",
    "soundfile>=0.12",
    "scipy>=1.10",
    "scikit-learn>=1.3",
    "matplotlib>=3.7",
    "av>=12",
    "espeakng-loader>=0.2",
    "pyyaml>=6",
]

setup(
    name="arl-hf",
    version="0.1.0",
    description="HuggingFace-native multimodal learning under modality imbalance with ARL (ICCV 2025)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["arl_hf", "arl_hf.*"]),
    package_data={"arl_hf": ["templates/*.md"]},
    python_requires=">=3.10",
    install_requires=RUNTIME,
    extras_require={"dev": ["pytest>=7", "hypothesis>=6"]},
    entry_points={"console_scripts": ["arl-hf=arl_hf.cli:main"]},
)
