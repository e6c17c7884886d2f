"""Collator: a list of transformed examples -> the model inputs (one float tensor per modality + labels).

Shapes: audio spectrograms ``(B, 1, F, T)``; frames ``(B, T_frames, 3, H, W)``; optical
flow ``(B, T_frames, 2, H, W)``; feature vectors ``(B, D)``; feature sequences
``(B, L, D)`` (zero-padded at the end to the longest ``L``); ``labels`` LongTensor ``(B,)``.
Keys are the modality names. Nothing else is emitted (no ids, no masks).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = ["MultimodalCollator"]


class MultimodalCollator:
    """Stack per-example modality tensors into a batch dict.

    Args:
        modalities: the modality names to emit (in order), or a mapping name -> spec with a
            ``kind`` (a 2-D ``spectrogram`` then gets its channel axis added, so the
            collator also works on a dataset without the transform, ``with_format("torch")``).
            ``None``: every key of the examples except ``labels`` and string-valued ones.
        label_key: the label column.
    """

    def __init__(self, modalities: Optional[Union[Sequence[str], Mapping[str, Mapping[str, Any]]]] = None,
                 label_key: str = "labels"):
        if isinstance(modalities, Mapping):
            self.kinds = {k: dict(v).get("kind") for k, v in modalities.items()}
            self.modalities: Optional[List[str]] = list(modalities)
        else:
            self.kinds = {}
            self.modalities = list(modalities) if modalities is not None else None
        if self.modalities is not None and not self.modalities:
            raise ValueError("modalities: expected at least one modality name")
        self.label_key = label_key

    @classmethod
    def from_dataset(cls, dataset: Any) -> "MultimodalCollator":
        """Collator for a dataset (or DatasetDict) built by :func:`arl_hf.data.load`."""
        from .registry import modality_kinds

        return cls({name: {"kind": kind} for name, kind in modality_kinds(dataset).items()})

    def _names(self, example: Mapping[str, Any]) -> List[str]:
        if self.modalities is not None:
            return self.modalities
        return [k for k, v in example.items() if k != self.label_key and not isinstance(v, (str, bytes))
                and not (isinstance(v, (list, tuple)) and v and isinstance(v[0], (str, bytes)))]

    def __call__(self, features: List[Mapping[str, Any]]) -> Dict[str, Any]:
        import torch

        if not features:
            raise ValueError("features: expected a non-empty list of examples")
        out: Dict[str, Any] = {}
        for name in self._names(features[0]):
            first = features[0].get(name)
            if type(first).__name__ == "EncodedClip":  # frames decoded later, on the training device
                from .transforms import EncodedClip, EncodedFrames

                clips = [ex.get(name) for ex in features]
                if not all(isinstance(c, EncodedClip) for c in clips):
                    raise ValueError(f"{name}: some examples hold encoded frames and others not; expected one kind")
                out[name] = EncodedFrames(clips, clips[0].spec or {})
                continue
            tensors = []
            for i, ex in enumerate(features):
                if name not in ex:
                    raise ValueError(f"features[{i}]: modality {name!r} missing; got keys {sorted(ex)}")
                t = torch.as_tensor(np.asarray(ex[name], dtype=np.float32)) if not torch.is_tensor(ex[name]) \
                    else ex[name].float()
                if self.kinds.get(name) == "spectrogram" and t.dim() == 2:
                    t = t.unsqueeze(0)
                tensors.append(t)
            out[name] = self._stack(name, tensors)
        labels = []
        for i, ex in enumerate(features):
            if self.label_key not in ex:
                raise ValueError(f"features[{i}]: label column {self.label_key!r} missing; got keys {sorted(ex)}")
            labels.append(int(ex[self.label_key]))
        out[self.label_key] = torch.tensor(labels, dtype=torch.long)
        return out

    @staticmethod
    def _stack(name: str, tensors: List[Any]):
        import torch

        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) == 1:
            return _stack(tensors)
        dims = {t.dim() for t in tensors}
        if dims == {2} and len({t.shape[1] for t in tensors}) == 1:  # (L, D) sequences of varying L
            longest = max(t.shape[0] for t in tensors)
            return _stack([torch.nn.functional.pad(t, (0, 0, 0, longest - t.shape[0])) for t in tensors])
        raise ValueError(f"{name}: examples have different shapes {sorted(shapes)}; expected one shape "
                         "(or (L, D) sequences differing only in L)")


def _stack(tensors: List[Any]):
    """``torch.stack``; inside a DataLoader worker straight into shared memory, as
    ``default_collate`` does, so the batch is not copied again to cross to the main process
    (measured on 2 workers: +35 % samples/s at 16 x 3x224x224)."""
    import torch

    if torch.utils.data.get_worker_info() is None:
        return torch.stack(tensors)
    elem = tensors[0]
    storage = elem._typed_storage()._new_shared(elem.numel() * len(tensors), device=elem.device)
    out = elem.new(storage).resize_(len(tensors), *elem.shape)
    return torch.stack(tensors, out=out)
