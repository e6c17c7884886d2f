"""Packaging: extras that follow the lazy imports, bounded majors, the README's commands equal to
.ci/run's, and a wheel (not editable) holding the templates and the console script."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ISSUE_EXTRAS = ("audio", "video", "avdigits", "plots", "tune", "tensorboard", "all", "dev")
#: import name -> distribution name, where they differ
DISTRIBUTIONS = {"sklearn": "scikit-learn", "yaml": "pyyaml", "PIL": "pillow", "espeakng_loader": "espeakng-loader",
                 "huggingface_hub": "huggingface_hub"}


def setup_kwargs():
    """The keyword arguments setup.py passes to setuptools.setup (run without building)."""
    import setuptools

    captured = {}
    saved = setuptools.setup
    setuptools.setup = lambda **kw: captured.update(kw)
    try:
        code = open(os.path.join(REPO, "setup.py"), encoding="utf-8").read()
        exec(compile(code, "setup.py", "exec"), {"__file__": os.path.join(REPO, "setup.py"), "__name__": "__main__"})
    finally:
        setuptools.setup = saved
    return captured


def _name(req: str) -> str:
    return re.split(r"[<>=!\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_extras_follow_the_lazy_imports_and_majors_are_bounded():
    kw = setup_kwargs()
    extras = kw["extras_require"]
    assert set(ISSUE_EXTRAS) <= set(extras)
    core = {_name(r) for r in kw["install_requires"]}
    assert "scikit-learn" not in core and "optuna" not in core  # evaluation and training need neither
    bounded = {_name(r): r for r in kw["install_requires"]}
    assert "<6" in bounded["transformers"] and "<6" in bounded["datasets"]
    assert {_name(r) for r in extras["tune"]} == {"optuna"}
    assert {_name(r) for r in extras["tensorboard"]} == {"tensorboard"}
    everything = {_name(r) for r in extras["all"]}
    for name in ISSUE_EXTRAS[:-2]:
        assert {_name(r) for r in extras[name]} <= everything, name
    # every third-party module arl_hf imports (lazily or not) is in the core or an extra
    stdlib = set(sys.stdlib_module_names)
    found = {}
    for root, _, files in os.walk(os.path.join(REPO, "arl_hf")):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(root, f)
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods = [node.module]
                else:
                    continue
                for m in mods:
                    top = m.split(".")[0]
                    if top not in stdlib and top != "arl_hf":
                        found.setdefault(DISTRIBUTIONS.get(top, top).lower().replace("_", "-"), path)
    declared = core | everything
    missing = {d: p for d, p in found.items() if d not in declared}
    assert not missing, missing
    assert {"librosa", "scikit-learn", "av", "matplotlib", "optuna", "espeakng-loader"} <= set(found)


def test_readme_commands_install_what_their_jobs_need_and_ci_runs_them():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    block = readme.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert commands == ['pip install -e ".[all]" && python examples/run_arl.py',
                        'pip install -e ".[all,dev]" && HF_HUB_OFFLINE=1 python -m pytest -q tests']
    ci = [line.strip() for line in open(os.path.join(REPO, ".ci", "run"), encoding="utf-8")]
    # CI runs the README's line exactly as written, in a new virtual environment it activated before
    assert [line for line in ci if line.startswith("pip ")] == [commands[1]]
    venv = next(i for i, line in enumerate(ci) if " -m venv " in line)
    activate = next(i for i, line in enumerate(ci) if line.startswith("source ") and line.endswith('/bin/activate"'))
    assert venv < activate < ci.index(commands[1])
    # then the linter, from the same environment, over the paths pyproject.toml configures it for
    lint = "python -m ruff check arl_hf examples tests benchmarks docs/generate_options.py || rc=$?"
    assert ci.index(commands[1]) < ci.index(lint)
    # the test suite needs optuna and tensorboard: both come with [all]; ruff comes with [dev]
    extras = setup_kwargs()["extras_require"]
    names = {_name(r) for e in ("all", "dev") for r in extras[e]}
    assert {"optuna", "tensorboard", "pytest", "hypothesis", "ruff"} <= names


def test_pyproject_declares_the_setup_py_metadata_dynamic():
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        data = tomllib.load(f)
    assert data["build-system"]["build-backend"] == "setuptools.build_meta"
    project = data["project"]
    assert project["name"] == "arl-hf"
    dynamic = {"version", "dependencies", "optional-dependencies", "scripts", "readme", "license"}
    assert dynamic <= set(project["dynamic"])
    assert not set(project) - {"name", "dynamic"}  # nothing given twice
    assert open(os.path.join(REPO, "LICENSE"), encoding="utf-8").read().startswith("MIT License")


def test_wheel_holds_the_package_data_and_the_console_script(tmp_path):
    import shutil

    pytest.importorskip("setuptools", minversion="77")
    src = tmp_path / "src"  # a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy2(os.path.join(REPO, name), src / name)
    for name in ("arl_hf", "model_cards"):
        shutil.copytree(os.path.join(REPO, name), src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PIP_NO_INDEX="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    wheel = next(p for p in os.listdir(tmp_path / "dist") if p.endswith(".whl"))
    with zipfile.ZipFile(tmp_path / "dist" / wheel) as z:
        names = set(z.namelist())
        template = z.read("arl_hf/templates/model_card.md").decode()
        entry = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
        meta = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "{{ install_command }}" in template and "{{ card_data }}" in template  # the file, not a symlink
    assert "arl-hf = arl_hf.cli:main" in entry
    for module in ("arl_hf/cli.py", "arl_hf/env.py", "arl_hf/protocol/compare.py", "arl_hf/data/sharing.py"):
        assert module in names, module
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert "Provides-Extra: tune" in meta and 'Requires-Dist: optuna>=5.0; extra == "tune"' in meta
    assert "Requires-Dist: transformers<6,>=5.0" in meta
