"""CMU-MOSI builder: audio, visual and text feature sequences, binary sentiment.

Reads the commonly distributed aligned feature pickles (pickled dicts of arrays):

* one file (``mosi_data.pkl``, ``aligned_50.pkl``, ``unaligned_50.pkl``, ``mosi.pkl`` or
  ``pickle_file=...``) holding ``{"train": S, "valid": S, "test": S}`` (``dev`` /
  ``validation`` accepted for ``valid``), or
* one file per split: ``train.pkl``, ``valid.pkl`` (or ``dev.pkl`` / ``validation.pkl``),
  ``test.pkl``, each holding one ``S``;

where ``S`` maps ``"audio"``, ``"vision"`` (or ``"visual"``) and ``"text"`` to arrays
``(N, L, D)`` (or ``(N, D)``), the sentiment scores to ``"regression_labels"`` (MMSA) or
``"labels"`` (MulT, any shape with N values), and optionally ``"id"`` to N ids.

The pickles are read with a restricted unpickler: dicts, lists, tuples, strings, numbers and
numpy arrays only; a pickle naming any other function or class is refused (``ValueError``),
so a crafted file cannot run code.

Binary labels from the score in [-3, 3]: ``label_convention="non_negative"`` (negative vs
non-negative, all utterances) or ``"non_zero"`` (negative vs positive; score-0 utterances
dropped). Non-finite feature values (``-inf`` occurs in some releases) become 0 and are
counted in the log, unless ``nonfinite="error"``.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from typing import Any, Dict, List, Mapping, Optional, Tuple

import datasets
import numpy as np

from ..log import get_logger
from .builder import ARLBuilder, ARLBuilderConfig, register_dataset

logger = get_logger(__name__)

SINGLE_FILES = ("mosi_data.pkl", "aligned_50.pkl", "unaligned_50.pkl", "mosi.pkl")
SPLIT_KEYS = {"train": ("train",), "validation": ("valid", "dev", "validation", "val"), "test": ("test",)}
MODALITY_KEYS = {"audio": ("audio",), "visual": ("vision", "visual"), "text": ("text",)}
LABEL_KEYS = ("regression_labels", "labels", "label")
CONVENTIONS = {"non_negative": ["negative", "non-negative"], "non_zero": ["negative", "positive"]}


@dataclasses.dataclass
class MOSIConfig(ARLBuilderConfig):
    """MOSI options.

    Attributes:
        pickle_file: the pickle to read (relative to data_dir); empty: auto-detected.
        label_convention: ``"non_negative"`` or ``"non_zero"`` (see module docstring).
        nonfinite: ``"zero"`` (replace and log the count) or ``"error"``.
    """

    pickle_file: str = ""
    label_convention: str = "non_negative"
    nonfinite: str = "zero"


#: the globals a feature pickle may name: numpy arrays, dtypes and scalars (module names of
#: numpy 1 and 2), builtin containers and numbers (``__builtin__``: Python 2 pickles), and
#: ``_codecs.encode`` (how protocol-2 pickles store bytes)
_ALLOWED_GLOBALS = frozenset(
    [(f"numpy.{core}.multiarray", n) for core in ("core", "_core") for n in ("_reconstruct", "scalar")]
    + [(f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
    + [(b, n) for b in ("builtins", "__builtin__") for n in ("dict", "list", "tuple", "set", "frozenset", "bytes",
                                                           "bytearray", "str", "int", "float", "complex", "bool")]
)


def _allowed_global(module: str, name: str) -> Any:
    import importlib

    if (module, name) not in _ALLOWED_GLOBALS:
        return None
    if module.startswith("numpy."):  # numpy.core.* (numpy 1) / numpy._core.* (numpy 2), whichever is installed
        sub = module.rsplit(".", 1)[1]
        try:
            return getattr(importlib.import_module(f"numpy._core.{sub}"), name)
        except ImportError:
            return getattr(importlib.import_module(f"numpy.core.{sub}"), name)
    return getattr(importlib.import_module("builtins" if module == "__builtin__" else module), name)


class _FeatureUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: any other global a pickle names (a
    function to call, a class to build) is refused, so a crafted file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed_global(module, name)
        if found is None:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a feature pickle may hold only dicts, lists, tuples, strings, "
                "numbers and numpy arrays")
        return found


def _load_pickle(path: str) -> Any:
    """The feature pickle at ``path``, read with :class:`_FeatureUnpickler` (containers and numpy
    arrays only); ``ValueError`` naming the file if it holds anything else or is corrupt."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mosi: feature pickle not found: {path}")
    try:
        with open(path, "rb") as fh:
            try:
                return _FeatureUnpickler(fh).load()
            except UnicodeDecodeError:  # Python 2 pickles of numpy arrays
                fh.seek(0)
                return _FeatureUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: corrupt or unreadable pickle ({type(err).__name__}: {err})") from err


def _pick(d: Mapping[str, Any], keys: Tuple[str, ...], where: str, what: str) -> Tuple[str, Any]:
    for k in keys:
        if k in d:
            return k, d[k]
    raise ValueError(f"{where}: no {what} key; expected one of {list(keys)}, found {sorted(map(str, d))}")


@register_dataset("mosi")
class MOSIBuilder(ARLBuilder):
    """CMU-MOSI (Zadeh et al., 2016): 2,199 utterances of 93 videos, sentiment in [-3, 3]."""

    BUILDER_CONFIG_CLASS = MOSIConfig
    VERSION = datasets.Version("1.0.0")
    MODALITIES = {
        "audio": {"kind": "sequence", "encoder": "mlp", "hidden_dims": [64, 64]},
        "visual": {"kind": "sequence", "encoder": "mlp", "hidden_dims": [64, 64]},
        "text": {"kind": "sequence", "encoder": "mlp", "hidden_dims": [64, 64]},
    }
    HOMEPAGE = "http://multicomp.cs.cmu.edu/resources/cmu-mosi-dataset/"
    CITATION = ("Zadeh et al., MOSI: Multimodal Corpus of Sentiment Intensity and Subjectivity Analysis "
                "in Online Opinion Videos, IEEE Intelligent Systems 2016.")
    EXTRA_FEATURES = {"score": datasets.Value("float32")}

    _dims: Optional[Dict[str, int]] = None

    def modality_specs(self) -> Dict[str, Dict[str, Any]]:
        specs = {k: dict(v) for k, v in self.MODALITIES.items()}
        for k, d in (self._dims or {}).items():
            specs[k]["input_dim"] = d
            specs[k]["shape"] = [self._lens[k], d]
        return specs

    def _modality_features(self) -> Dict[str, Any]:
        dims = self._dims or {k: 1 for k in self.MODALITIES}
        return {k: datasets.Array2D(shape=(None, dims[k]), dtype="float32") for k in self.MODALITIES}

    def _read_splits(self, root: str) -> Tuple[Dict[str, Mapping[str, Any]], Dict[str, str]]:
        cfg = self.config
        if cfg.pickle_file:
            files = [cfg.pickle_file]
        else:
            files = [f for f in SINGLE_FILES if os.path.isfile(os.path.join(root, f))]
        if files:
            path = os.path.join(root, files[0])
            data = _load_pickle(path)
            if not isinstance(data, Mapping):
                raise ValueError(f"{path}: expected a dict of splits, got {type(data).__name__}")
            out, sources = {}, {}
            for split, keys in SPLIT_KEYS.items():
                key, value = _pick(data, keys, path, f"{split} split")
                out[split], sources[split] = value, f"{path}[{key!r}]"
            return out, sources
        out, sources = {}, {}
        for split, keys in SPLIT_KEYS.items():
            candidates = (os.path.join(root, k + ".pkl") for k in keys)
            path = next((c for c in candidates if os.path.isfile(c)), None)
            if path is None:
                raise FileNotFoundError(
                    f"mosi: no feature pickle in {root}; expected one of {list(SINGLE_FILES)} or per-split files "
                    f"{[k + '.pkl' for k in keys]} for the {split} split")
            out[split], sources[split] = _load_pickle(path), path
        return out, sources

    def _resolve(self):
        cfg = self.config
        root = self._require_data_dir()
        if cfg.label_convention not in CONVENTIONS:
            raise ValueError(f"label_convention: expected one of {sorted(CONVENTIONS)}, got {cfg.label_convention!r}")
        if cfg.nonfinite not in ("zero", "error"):
            raise ValueError(f"nonfinite: expected 'zero' or 'error', got {cfg.nonfinite!r}")
        splits, sources = self._read_splits(root)
        items: Dict[str, List[Dict[str, Any]]] = {}
        dims: Dict[str, int] = {}
        lens: Dict[str, int] = {}
        replaced = 0
        dropped_zero = 0
        for split, data in splits.items():
            where = sources[split]
            if not isinstance(data, Mapping):
                raise ValueError(f"{where}: expected a dict of arrays, got {type(data).__name__}")
            arrays = {}
            for mod, keys in MODALITY_KEYS.items():
                key, value = _pick(data, keys, where, f"{mod} feature")
                arr = np.asarray(value, dtype=np.float32)
                if arr.ndim == 2:
                    arr = arr[:, None, :]
                if arr.ndim != 3:
                    raise ValueError(f"{where}[{key!r}]: expected an array (N, L, D) or (N, D), got shape {arr.shape}")
                if mod in dims and arr.shape[2] != dims[mod]:
                    raise ValueError(f"{where}[{key!r}]: feature dimension {arr.shape[2]} differs from the "
                                     f"other splits' {dims[mod]}")
                dims[mod], lens[mod] = int(arr.shape[2]), int(arr.shape[1])
                bad = ~np.isfinite(arr)
                if bad.any():
                    if cfg.nonfinite == "error":
                        raise ValueError(f"{where}[{key!r}]: {int(bad.sum())} non-finite values "
                                         f"(pass nonfinite='zero' to replace them with 0)")
                    replaced += int(bad.sum())
                    arr = np.where(bad, 0.0, arr).astype(np.float32)
                arrays[mod] = arr
            lkey, lval = _pick(data, LABEL_KEYS, where, "sentiment label")
            scores = np.asarray(lval, dtype=np.float64).reshape(-1)
            n = {m: a.shape[0] for m, a in arrays.items()}
            if len(set(n.values()) | {scores.size}) != 1:
                raise ValueError(f"{where}: arrays disagree on the number of utterances: "
                                 f"{dict(n, **{lkey: scores.size})}; expected the same N everywhere")
            if not np.all(np.isfinite(scores)):
                raise ValueError(f"{where}[{lkey!r}]: non-finite sentiment scores")
            ids = data.get("id") if isinstance(data, Mapping) else None
            id_list = [self._id(ids, i) if ids is not None else f"{split}_{i}" for i in range(scores.size)]
            rows = []
            for i, s in enumerate(scores):
                if cfg.label_convention == "non_zero":
                    if s == 0:
                        dropped_zero += 1
                        continue
                    label = int(s > 0)
                else:
                    label = int(s >= 0)
                rows.append({"id": id_list[i], "label": label, "score": float(s),
                             **{m: arrays[m][i] for m in arrays}})
            items[split] = rows
        if replaced:
            logger.warning("mosi: replaced %d non-finite feature values with 0 (nonfinite='zero')", replaced)
        self._dims, self._lens = dims, lens
        split_record = {"method": "the pickle's train/valid/test", "sources": sources}
        options = {"label_convention": cfg.label_convention, "nonfinite": cfg.nonfinite,
                   "nonfinite_replaced": replaced, "zero_scores_dropped": dropped_zero,
                   "feature_dims": dims, "sequence_lengths": lens}
        return items, CONVENTIONS[cfg.label_convention], split_record, options

    @staticmethod
    def _id(ids: Any, i: int) -> str:
        v = ids[i]
        if isinstance(v, bytes):
            return v.decode("utf-8", "replace")
        if isinstance(v, (list, tuple, np.ndarray)):
            return "_".join(x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(v).reshape(-1))
        return str(v)

    def _example(self, item: Dict[str, Any]) -> Dict[str, Any]:
        return {m: item[m] for m in self.MODALITIES} | {"score": item["score"]}
