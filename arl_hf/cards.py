"""Model cards of trained runs: ``README.md`` with honest metadata (huggingface_hub).

The card is rendered from ``model_cards/template.md`` with :class:`huggingface_hub.ModelCard`
and :class:`~huggingface_hub.ModelCardData`:

* ``library_name: arl-hf``: the model type is registered by ``import arl_hf``, and the card
  says how to install it (:func:`arl_hf.env.install_command`; arl-hf is not on the package
  index); the usage snippet imports it before ``AutoModel.from_pretrained``.
* ``license``, ``base_model`` (``finetuned_from``), ``tags``, ``language`` and ``datasets``
  come from the run and from ``trainer.push_to_hub(license=..., tags=..., finetuned_from=...)``.
* ``model-index`` eval results (accuracy and macro-F1 of the fused head and each unimodal
  head, per split, each one :class:`~huggingface_hub.EvalResult`) only when the dataset is a
  Hub dataset repo: ``dataset_type`` must be a Hub dataset id. The Hub has no
  multimodal-classification task id; the results use the nearest one for the model's input
  modalities (:func:`hub_task`), and the card says so.
* the framework versions the run used.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Sequence

from .data.record import format_value as _fmt
from .data.record import preprocessing_text
from .log import get_logger
from .paper import ARL_PAPER

logger = get_logger(__name__)

__all__ = ["RunSummary", "eval_results", "build_model_card", "write_model_card", "template_path", "hub_task",
           "dataset_label", "paper_url", "card_install_command", "shareable_value", "shareable_command",
           "shareable_tree", "LIBRARY_NAME", "DEFAULT_LICENSE"]

#: ``library_name`` of the cards: loading needs ``import arl_hf`` (see :func:`arl_hf.env.install_command`)
LIBRARY_NAME = "arl-hf"
TASK_NAME = "Multimodal classification"
DEFAULT_LICENSE = "mit"

_MINIMAL_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ results_table }}

```bibtex
{{ citation }}
```
"""


def hub_task(input_modalities: Sequence[str]) -> str:
    """The nearest Hub task id for a classifier of these input modalities (the Hub has no
    multimodal-classification task): video > audio > image > text, else tabular."""
    mods = set(input_modalities)
    for modality, task in (("video", "video-classification"), ("audio", "audio-classification"),
                           ("image", "image-classification"), ("text", "text-classification")):
        if modality in mods:
            return task
    return "tabular-classification"


@dataclass
class RunSummary:
    """What a model card says about a run.

    Attributes:
        model_name: card title and ``model-index`` name.
        dataset: the dataset's short name (shown in the text).
        modalities: modality -> encoder spec (``MultimodalConfig.modalities``), in order.
        metrics: split -> metric dict (keys ``accuracy``, ``macro_f1``,
            ``accuracy_<m>``, ``macro_f1_<m>``), e.g. ``{"validation": ..., "test": ...}``.
        strategy: training strategy name (``"arl"``, ``"none"``, ...).
        preset: preset name the run started from, if any.
        fusion: fusion module name.
        preprocessing: ``config.preprocessing`` record.
        hyperparameters: option -> value shown in the hyper-parameter table.
        plots: ``(relative path, caption)`` pairs of images embedded in the card.
        selection: how the checkpoint was selected (free text).
        load_path: what to pass to ``from_pretrained`` (Hub id or directory).
        reproduce_command: the command that reproduces the run.
        tags: extra card tags.
        dataset_id: the Hub dataset repo id, when the data came from one (``datasets`` metadata
            and ``model-index``; without it the card has no ``model-index``).
        dataset_revision: the commit of that dataset repo.
        dataset_arg: what ``--dataset`` of ``arl-hf evaluate`` takes to find the data.
        license: Hub license id of the model (``None``: omitted).
        base_model: the model this one was fine-tuned from (Hub id).
        language: language code(s), if any modality is language.
        extra_datasets: further Hub dataset ids (``dataset_tags`` of ``push_to_hub``).
        task: Hub task id of the eval results (default: :func:`hub_task` of the inputs).
        input_modalities: the model's ``input_modalities``.
        paper: the method's paper (``title``, ``venue``, ``citation``, optional arXiv ``id``).
        base_tags: the tags every card of this trainer carries (default: arl-hf's), before
            ``strategy-<name>`` and ``tags``.
    """

    model_name: str
    dataset: str
    modalities: Mapping[str, Mapping[str, Any]]
    metrics: Mapping[str, Mapping[str, float]]
    strategy: str = "arl"
    preset: Optional[str] = None
    fusion: str = "concat"
    preprocessing: Optional[Mapping[str, Any]] = None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    plots: Sequence[tuple] = ()
    selection: str = ""
    load_path: str = "path/to/checkpoint"
    reproduce_command: Optional[str] = "arl-hf train"
    tags: Sequence[str] = ()
    dataset_id: Optional[str] = None
    dataset_revision: Optional[str] = None
    dataset_arg: Optional[str] = None
    license: Optional[str] = DEFAULT_LICENSE
    base_model: Optional[str] = None
    language: Optional[Any] = None
    extra_datasets: Sequence[str] = ()
    task: Optional[str] = None
    input_modalities: Sequence[str] = ()
    paper: Mapping[str, str] = field(default_factory=lambda: dict(ARL_PAPER))
    base_tags: Optional[Sequence[str]] = None


def paper_url(paper: Mapping[str, str]) -> Optional[str]:
    """The Hub paper page of a paper with an arXiv ``id`` (``None`` without one)."""
    return f"https://huggingface.co/papers/{paper['id']}" if paper.get("id") else None


def template_path() -> Optional[str]:
    """Path of the card template (``model_cards/template.md``), or ``None`` if not installed."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (
        os.path.join(here, "templates", "model_card.md"),
        os.path.join(os.path.dirname(here), "model_cards", "template.md"),
    ):
        if os.path.isfile(candidate):
            return candidate
    return None


def _heads(modalities: Sequence[str]) -> List[tuple]:
    return [("fused", "")] + [(m, f"_{m}") for m in modalities]


def _task(summary: RunSummary) -> str:
    if summary.task:
        return summary.task
    mods = list(summary.input_modalities)
    if not mods:
        mods = list(summary.modalities)  # the modality names, when no input modalities are given
    return hub_task(mods)


def eval_results(summary: RunSummary) -> list:
    """One :class:`~huggingface_hub.EvalResult` per split, head and metric; empty unless the
    dataset is a Hub dataset repo (``summary.dataset_id``): ``dataset_type`` is a Hub id."""
    from huggingface_hub import EvalResult

    if not summary.dataset_id:
        return []
    config = _preprocessing_name(summary.preprocessing)
    task = _task(summary)
    results = []
    for split, metrics in summary.metrics.items():
        for head, suffix in _heads(list(summary.modalities)):
            for key, metric_type, label in (("accuracy", "accuracy", "Accuracy"), ("macro_f1", "f1", "Macro-F1")):
                value = metrics.get(f"{key}{suffix}")
                if value is None:
                    continue
                results.append(
                    EvalResult(
                        task_type=task,
                        task_name=TASK_NAME,
                        dataset_type=summary.dataset_id,
                        dataset_name=summary.dataset,
                        dataset_config=config,
                        dataset_split=split,
                        dataset_revision=summary.dataset_revision,
                        metric_type=metric_type,
                        metric_name=f"{label} ({head}, {split})",
                        metric_config="macro" if metric_type == "f1" else None,
                        metric_value=round(float(value), 6),
                    )
                )
    return results


def _preprocessing_name(preprocessing: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The audio preset name (the dataset "config" of the eval results), if recorded."""
    if not preprocessing:
        return None
    data = preprocessing.get("data") or {}
    audio = data.get("audio_preset") if isinstance(data, Mapping) else None
    if isinstance(audio, Mapping) and isinstance(audio.get("name"), str):
        return audio["name"]
    value = preprocessing.get("preprocessing")
    return value if isinstance(value, str) else None


def results_table(metrics: Mapping[str, Mapping[str, float]], modalities: Sequence[str]) -> str:
    """Markdown table: one row per split and head, accuracy and macro-F1 in percent."""
    lines = ["| split | head | accuracy (%) | macro-F1 (%) |", "|---|---|---:|---:|"]
    for split, m in metrics.items():
        for head, suffix in _heads(modalities):
            acc, f1 = m.get(f"accuracy{suffix}"), m.get(f"macro_f1{suffix}")
            if acc is None and f1 is None:
                continue
            acc_s = f"{100 * acc:.2f}" if acc is not None else "-"
            f1_s = f"{100 * f1:.2f}" if f1 is not None else "-"
            lines.append(f"| {split} | {head} | {acc_s} | {f1_s} |")
    return "\n".join(lines)


def _kv_table(values: Mapping[str, Any], header=("option", "value")) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    for k, v in values.items():
        lines.append(f"| `{k}` | {_fmt(v).replace('|', '/')} |")
    return "\n".join(lines)


def _versions_text() -> str:
    from .env import framework_versions

    return "\n".join(f"- {name} {version or 'not installed'}" for name, version in framework_versions().items())


def build_model_card(summary: RunSummary) -> "ModelCard":  # noqa: F821
    """Render the card (metadata + text) of a run."""
    from huggingface_hub import ModelCard, ModelCardData

    modalities = list(summary.modalities)
    if summary.base_tags is None:
        tags = ["arl-hf", "multimodal", "modality-imbalance", f"strategy-{summary.strategy}"]
        if summary.strategy == "arl":
            tags.append("arl")
    else:
        tags = list(dict.fromkeys(summary.base_tags))
    tags += [t for t in summary.tags if t not in tags]
    datasets = [d for d in [summary.dataset_id, *summary.extra_datasets] if d]
    results = eval_results(summary)
    card_data = ModelCardData(
        model_name=summary.model_name,
        datasets=list(dict.fromkeys(datasets)) or None,
        library_name=LIBRARY_NAME,
        license=summary.license,
        base_model=summary.base_model,
        language=summary.language,
        tags=tags,
        metrics=["accuracy", "f1"],
        eval_results=results or None,
    )
    encoders = ", ".join(f"{m}: `{spec.get('encoder')}`" for m, spec in summary.modalities.items())
    if results:
        index_note = (f"The `model-index` metadata lists these results under the Hub task `{_task(summary)}`, the "
                      "nearest Hub task id: the Hub has no multimodal-classification task.")
    else:
        index_note = ("The metadata has no `model-index`: the dataset is not a Hub dataset repo (train with "
                      "`--dataset <owner>/<name>`, e.g. one pushed with `arl_hf.data.push_prepared`, to get one).")
    kwargs = dict(
        model_name=summary.model_name,
        modalities_text=", ".join(modalities),
        dataset_name=summary.dataset,
        dataset_id=shareable_value(summary.dataset_arg or summary.dataset_id or summary.dataset),
        strategy=summary.strategy,
        paper_title=summary.paper.get("title", ""),
        paper_venue=summary.paper.get("venue", ""),
        paper_url=paper_url(summary.paper),
        citation=summary.paper.get("citation", ""),
        preset=f"`{summary.preset}`" if summary.preset else "none (options given explicitly)",
        preprocessing_text=preprocessing_text(summary.preprocessing),
        model_text=f"{encoders}; fusion `{summary.fusion}`",
        selection_text=summary.selection or "final checkpoint",
        results_table=results_table(summary.metrics, modalities),
        index_note=index_note,
        hyperparameters_table=_kv_table(summary.hyperparameters),
        plots=[{"path": p, "caption": c} for p, c in summary.plots],
        load_path=shareable_value(summary.load_path),
        inputs_text=", ".join(f"{m}=..." for m in modalities),
        reproduce_command=shareable_command(summary.reproduce_command),
        install_command=card_install_command(),
        versions_text=_versions_text(),
        license=summary.license,
    )
    path = template_path()
    if path is None:
        logger.warning("model card template model_cards/template.md not found; writing a minimal card")
        return ModelCard.from_template(card_data, template_str=_MINIMAL_TEMPLATE, **kwargs)
    return ModelCard.from_template(card_data, template_path=path, **kwargs)


def write_model_card(summary: RunSummary, output_dir: str) -> str:
    """Render the card and write ``<output_dir>/README.md``; returns its path."""
    card = build_model_card(summary)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "README.md")
    card.save(path)
    return path


# ---------------------------------------------------------------------------------- records
def dataset_label(record: Optional[Mapping[str, Any]], default: str = "dataset") -> str:
    """A short name of a recorded dataset: the prepared dataset's own name (``cremad``...),
    else the repo id, else the folder's name."""
    record = record or {}
    data = record.get("data") if isinstance(record.get("data"), Mapping) else {}
    name = str(record.get("dataset") or default)
    if data.get("dataset"):
        return str(data["dataset"])
    return shareable_value(name, note=True)


# ------------------------------------------------------------------------- publishable text
def _https_remote(remote: str) -> Optional[str]:
    """A git remote as an ``https://`` URL (``git@host:o/r``, ``ssh://[user@]host/o/r``), or
    ``None`` when it is no network URL (a local path, ``file://``)."""
    from .env import _strip_credentials

    remote = remote.strip()
    match = re.match(r"^[\w.-]+@([\w.-]+):(?!//)(.+)$", remote)  # scp-like: git@host:owner/repo
    if match:
        return f"https://{match.group(1)}/{match.group(2)}"
    match = re.match(r"^(?:git\+)?(ssh|git|https?)://(?:[^/@]+@)?([^/:]+)(?::\d+)?/(.+)$", remote)
    if match:
        scheme = match.group(1)
        host_path = f"{match.group(2)}/{match.group(3)}"
        return _strip_credentials(f"{'http' if scheme == 'http' else 'https'}://{host_path}")
    return None


def card_install_command(checkout: Optional[str] = "auto") -> str:
    """The install line a card prints: always a valid pip requirement, never a local path.

    ``pip install "arl-hf @ git+https://<host>/<owner>/<repo>@<commit>"`` when the source
    checkout (``checkout``; ``"auto"``: the one holding the imported package) has a network
    git remote (ssh remotes are written as https), or pip recorded a VCS / https source;
    otherwise ``pip install "arl-hf==<version>"`` after a comment saying to install that
    version from its source repository (arl-hf is not on the package index)."""
    from .env import DISTRIBUTION, _direct_url, _git, _source_checkout, arl_hf_version

    if checkout == "auto":
        checkout = _source_checkout()
    source = None
    if checkout is not None:
        remote = _git(checkout, "config", "--get", "remote.origin.url")
        commit = _git(checkout, "rev-parse", "HEAD")
        url = _https_remote(remote) if remote else None
        if url:
            source = f"git+{url}" + (f"@{commit}" if commit else "")
    else:
        direct = _direct_url() or {}
        vcs = direct.get("vcs_info") or {}
        url = _https_remote(str(direct.get("url") or ""))
        if url and vcs.get("vcs") == "git":
            source = f"git+{url}" + (f"@{vcs['commit_id']}" if vcs.get("commit_id") else "")
        elif url and not vcs:
            source = url
    if source:
        return f'pip install "{DISTRIBUTION} @ {source}"'
    version = arl_hf_version()
    return (f"# arl-hf {version} is not on the package index: install it from its source repository\n"
            f"# (pip install \"{DISTRIBUTION} @ git+https://<host>/<owner>/arl-hf@v{version}\" or a clone's folder)\n"
            f'pip install "{DISTRIBUTION}=={version}"')


def _is_local_path(value: str) -> bool:
    return os.path.isabs(value) or value.startswith(("~", "./", "../")) or (os.sep in value and os.path.exists(value))


def shareable_value(value: Any, note: bool = False) -> Any:
    """A value fit to publish: a local path becomes its base name (``/x/y/vectors`` ->
    ``vectors``; with ``note``: ``vectors (local folder)``); other values are unchanged."""
    if not isinstance(value, str) or not value or not _is_local_path(value):
        return value
    name = os.path.basename(os.path.normpath(os.path.expanduser(value))) or value
    return f"{name} (local folder)" if note else name


def shareable_command(command: Optional[str]) -> Optional[str]:
    """A command line fit to publish: each local-path argument (also ``--flag=PATH``) becomes
    its base name, and a comment line names those that are local folders."""
    if not command:
        return command
    import shlex

    words, local = [], []
    for word in shlex.split(command):
        flag, eq, value = word.partition("=") if word.startswith("--") else ("", "", word)
        new = shareable_value(value)
        if new != value:
            local.append(new)
        words.append(f"{flag}{eq}{new}")
    text = " ".join(shlex.quote(w) for w in words)
    if local:
        text = "# " + ", ".join(dict.fromkeys(local)) + ": local folders of the run (not published)\n" + text
    return text


def shareable_tree(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings...) with every absolute local path replaced by
    its base name (:func:`shareable_value`), for a results file meant to be shared."""
    if isinstance(value, Mapping):
        return {k: shareable_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [shareable_tree(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return shareable_value(value)
    return value
