"""Where this copy of arl-hf comes from, and what it runs on (``arl-hf --version``, ``arl-hf env``).

:func:`install_command` is the one place that says how to install arl-hf: it is not on the
Python package index, so ``pip install arl-hf`` would be false. The command names the
source this copy was installed from (the git remote and commit of its checkout, the VCS URL
pip recorded, or the local path), and model cards print it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
from typing import Any, Dict, Optional, Sequence

__all__ = ["DISTRIBUTION", "FRAMEWORKS", "OPTIONAL", "install_command", "framework_versions", "environment",
           "format_environment"]

#: the distribution name (setup.py / pyproject.toml)
DISTRIBUTION = "arl-hf"
#: (import name, distribution name) of the libraries a run depends on, shown on model cards
FRAMEWORKS = (("transformers", "transformers"), ("torch", "torch"), ("datasets", "datasets"),
              ("accelerate", "accelerate"), ("timm", "timm"), ("huggingface_hub", "huggingface_hub"),
              ("safetensors", "safetensors"))
#: optional libraries, with the extra that installs each (see docs/install.md)
OPTIONAL = (("torchvision", "torchvision", "core"), ("numpy", "numpy", "core"), ("yaml", "PyYAML", "core"),
            ("librosa", "librosa", "audio"), ("soundfile", "soundfile", "audio"), ("scipy", "scipy", "audio"),
            ("sklearn", "scikit-learn", "audio, video, avdigits"), ("av", "av", "video"),
            ("espeakng_loader", "espeakng-loader", "avdigits"), ("matplotlib", "matplotlib", "plots"),
            ("optuna", "optuna", "tune"), ("tensorboard", "tensorboard", "tensorboard"),
            ("pytest", "pytest", "dev"), ("hypothesis", "hypothesis", "dev"))


def _version(dist: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def arl_hf_version() -> str:
    from .version import __version__

    return __version__


def _strip_credentials(url: str) -> str:
    """``https://user:token@host/x`` -> ``https://host/x`` (never print a token into a card)."""
    return re.sub(r"^([a-z+]+://)[^/@]+@", r"\1", url)


def _git(folder: str, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _source_checkout() -> Optional[str]:
    """The repository folder holding the imported ``arl_hf`` package, if it is a source checkout."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(here, "setup.py")) and os.path.isdir(os.path.join(here, "arl_hf")):
        return here
    return None


def _direct_url() -> Optional[Dict[str, Any]]:
    """pip's record (PEP 610 ``direct_url.json``) of where the installed distribution came from."""
    from importlib import metadata

    try:
        text = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def install_source() -> str:
    """The pip requirement source of this copy: ``git+URL@commit``, a VCS URL, or a local path."""
    checkout = _source_checkout()
    if checkout is not None:
        remote = _git(checkout, "config", "--get", "remote.origin.url")
        commit = _git(checkout, "rev-parse", "HEAD")
        if remote:
            remote = _strip_credentials(remote)
            if remote.startswith("git@"):  # git@host:owner/repo -> https://host/owner/repo
                remote = "https://" + remote[len("git@"):].replace(":", "/", 1)
            return f"git+{remote}" + (f"@{commit}" if commit else "")
        return checkout
    direct = _direct_url()
    if direct and direct.get("url"):
        url = _strip_credentials(str(direct["url"]))
        vcs = direct.get("vcs_info") or {}
        if vcs.get("vcs"):
            return f"{vcs['vcs']}+{url}" + (f"@{vcs['commit_id']}" if vcs.get("commit_id") else "")
        return url[len("file://"):] if url.startswith("file://") else url
    return "<path or git URL of the arl-hf source>"


def install_command(extras: Sequence[str] = ()) -> str:
    """The ``pip install`` line of this copy of arl-hf (not on the package index), e.g.
    ``pip install "arl-hf @ git+https://github.com/<owner>/arl-hf@<commit>"``."""
    source = install_source()
    name = DISTRIBUTION + (f"[{','.join(extras)}]" if extras else "")
    if re.match(r"^[a-z]+\+", source) or "://" in source:
        return f'pip install "{name} @ {source}"'
    return f'pip install "{source}' + (f'[{",".join(extras)}]' if extras else "") + '"'


def framework_versions() -> Dict[str, Optional[str]]:
    """arl-hf and the libraries of :data:`FRAMEWORKS` -> installed version."""
    out: Dict[str, Optional[str]] = {DISTRIBUTION: arl_hf_version()}
    for _, dist in FRAMEWORKS:
        out[dist] = _version(dist)
    return out


def _devices() -> Dict[str, Any]:
    info: Dict[str, Any] = {}
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return {"torch": "not installed"}
    info["cuda_available"] = bool(torch.cuda.is_available())
    info["cuda_version"] = torch.version.cuda
    if info["cuda_available"]:
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cudnn_version"] = torch.backends.cudnn.version()
    mps = getattr(torch.backends, "mps", None)
    info["mps_available"] = bool(mps is not None and mps.is_available())
    xpu = getattr(torch, "xpu", None)
    info["xpu_available"] = bool(xpu is not None and xpu.is_available())
    info["cpu_count"] = os.cpu_count()
    info["torch_num_threads"] = torch.get_num_threads()
    return info


def _cache_dirs() -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {}
    try:
        from huggingface_hub import constants

        out["HF_HOME"] = constants.HF_HOME
        out["HF_HUB_CACHE"] = constants.HF_HUB_CACHE
    except ImportError:  # pragma: no cover
        pass
    try:
        import datasets

        out["HF_DATASETS_CACHE"] = str(datasets.config.HF_DATASETS_CACHE)
    except ImportError:
        out["HF_DATASETS_CACHE"] = None
    try:
        import torch.hub

        out["TORCH_HOME"] = torch.hub.get_dir()
    except ImportError:  # pragma: no cover
        pass
    return out


def environment() -> Dict[str, Any]:
    """Everything a bug report needs: versions, devices, cache folders, offline flags."""
    optional = {}
    for module, dist, extra in OPTIONAL:
        version = _version(dist)
        if version is None and importlib.util.find_spec(module) is not None:
            version = "installed"
        optional[dist] = {"version": version, "extra": extra}
    flags = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
                                            "HF_ENDPOINT", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")
             if os.environ.get(k) is not None}
    return {
        "arl-hf": arl_hf_version(),
        "install": install_command(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "frameworks": {k: v for k, v in framework_versions().items() if k != DISTRIBUTION},
        "optional": optional,
        "devices": _devices(),
        "cache_dirs": _cache_dirs(),
        "environment": flags,
    }


def format_environment(env: Optional[Dict[str, Any]] = None) -> str:
    """:func:`environment` as the Markdown list to paste into a bug report."""
    env = env or environment()
    lines = [f"- arl-hf version: {env['arl-hf']}", f"- install: `{env['install']}`",
             f"- Python: {env['python']}", f"- Platform: {env['platform']}"]
    lines += [f"- {k}: {v or 'not installed'}" for k, v in env["frameworks"].items()]
    lines.append("- optional: " + ", ".join(
        f"{k} {v['version'] or 'not installed'} [{v['extra']}]" for k, v in env["optional"].items()))
    dev = env["devices"]
    gpus = ", ".join(dev.get("cuda_devices") or []) or "none"
    lines.append(f"- devices: CUDA {'yes' if dev.get('cuda_available') else 'no'} (torch built with CUDA "
                 f"{dev.get('cuda_version')}; GPUs: {gpus}), MPS {'yes' if dev.get('mps_available') else 'no'}, "
                 f"XPU {'yes' if dev.get('xpu_available') else 'no'}, {dev.get('cpu_count')} CPUs, "
                 f"torch threads {dev.get('torch_num_threads')}")
    lines += [f"- {k}: {v}" for k, v in env["cache_dirs"].items()]
    lines += [f"- {k}={v}" for k, v in env["environment"].items()]
    return "\n".join(lines)
