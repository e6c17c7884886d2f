"""Encoder registry: one module per modality that maps an input to a pooled feature vector.

Registered names: ``"timm:<model name>"`` (any timm backbone, frames folded into the
batch and averaged over time as in the paper's encoders), ``"cnn"`` (a small conv stack,
:mod:`arl_hf.modeling.cnn`), ``"mlp"`` (Linear+ReLU, no normalisation layers), and the feature-sequence encoders ``"transformer"`` and
``"lstm"`` for ``(B, L, D)`` inputs such as MOSI's audio/visual/text features (paper
Table 2). Add your own with :func:`register_encoder`.

Every built-in encoder can also run *stage by stage* (``forward_stem``,
``forward_stage(i, h)``, ``forward_pool``), which is what intermediate fusion
(:mod:`arl_hf.modeling.intermediate`, paper Table 3) needs to exchange information
between the encoders' intermediate feature maps.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import nn
from ..log import get_logger
from ..registry import Registry

logger = get_logger(__name__)

#: encoder name -> builder ``builder(modality, spec) -> nn.Module``
ENCODERS: Registry = Registry("encoder")

#: spec keys of timm encoders that are ours, not timm keyword arguments
TIMM_OWN_KEYS = ("encoder", "in_chans", "pretrained")


def register_encoder(name: str):
    """Decorator registering an encoder builder ``builder(modality, spec) -> nn.Module``.

    The module must expose ``out_dim`` (int) and ``check_input(x, field)`` raising
    ``ValueError`` for a malformed input. To take part in intermediate fusion it also
    exposes the stage protocol: ``num_stages``, ``stage_dims`` (channels after each
    stage), ``channel_axis`` (1 for ``(B, C, ...)`` maps, -1 for channels-last
    tensors), ``forward_stem(x)``, ``forward_stage(i, h)`` and ``forward_pool(h)``,
    such that ``forward(x) == forward_pool(stage_{S-1}(...stage_0(forward_stem(x))))``.
    """

    return ENCODERS.register(name)


def _family(encoder: str) -> str:
    return "timm" if encoder.startswith("timm:") else encoder


def _positive_int(spec: Dict[str, Any], key: str, field: str, default: Any = None, required: bool = False) -> None:
    if key not in spec and not required:
        return
    value = spec.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{field}[{key!r}]: expected a positive int, got {value!r}")


def _no_unknown_keys(spec: Dict[str, Any], allowed: tuple, field: str) -> None:
    unknown = sorted(set(spec) - set(allowed) - {"encoder"})
    if unknown:
        raise ValueError(f"{field}[{unknown[0]!r}]: unknown option for encoder {spec['encoder']!r}; expected {sorted(allowed)}")


def validate_encoder_spec(modality: str, spec: Dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the field when ``spec`` cannot build an encoder."""
    field = f"modalities[{modality!r}]"
    if not isinstance(spec, dict) or "encoder" not in spec:
        raise ValueError(f"{field}: expected a dict with an 'encoder' key, got {spec!r}")
    enc = spec["encoder"]
    if not isinstance(enc, str) or _family(enc) not in ENCODERS:
        raise ValueError(
            f"{field}['encoder']: unknown encoder {enc!r}; expected 'timm:<model name>' or one of "
            f"{sorted(k for k in ENCODERS if k != 'timm')}"
        )
    if _family(enc) == "timm":
        name = enc[len("timm:") :]
        import timm

        if not name or not timm.is_model(name.split(".")[0]):
            raise ValueError(f"{field}['encoder']: timm has no model named {name!r}")
        if not isinstance(spec.get("in_chans", 3), int) or spec.get("in_chans", 3) < 1:
            raise ValueError(f"{field}['in_chans']: expected a positive int, got {spec.get('in_chans')!r}")
        pretrained = spec.get("pretrained", False)
        if not isinstance(pretrained, (bool, str)):
            raise ValueError(
                f"{field}['pretrained']: expected False, True (local HF cache) or a local weights file path, "
                f"got {pretrained!r}"
            )
    validate = getattr(ENCODERS[_family(enc)], "validate_spec", None)
    if validate is not None:
        validate(spec, field)
    if enc == "mlp":
        if not isinstance(spec.get("input_dim"), int) or spec["input_dim"] < 1:
            raise ValueError(f"{field}['input_dim']: expected a positive int, got {spec.get('input_dim')!r}")
        dims = spec.get("hidden_dims", [])
        if not isinstance(dims, (list, tuple)) or len(dims) == 0 or not all(isinstance(d, int) and d > 0 for d in dims):
            raise ValueError(f"{field}['hidden_dims']: expected a non-empty list of positive ints, got {dims!r}")
    if enc == "transformer":
        _no_unknown_keys(spec, TransformerSequenceEncoder.OPTIONS, field)
        _positive_int(spec, "input_dim", field, required=True)
        for key in ("d_model", "num_layers", "num_heads", "dim_feedforward", "max_len"):
            _positive_int(spec, key, field)
        d_model = spec.get("d_model", TransformerSequenceEncoder.DEFAULTS["d_model"])
        heads = spec.get("num_heads", TransformerSequenceEncoder.DEFAULTS["num_heads"])
        if d_model % heads != 0:
            raise ValueError(f"{field}['num_heads']: must divide d_model={d_model}, got {heads}")
        dropout = spec.get("dropout", 0.1)
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"{field}['dropout']: expected a number in [0, 1), got {dropout!r}")
    if enc == "lstm":
        _no_unknown_keys(spec, LSTMSequenceEncoder.OPTIONS, field)
        _positive_int(spec, "input_dim", field, required=True)
        for key in ("hidden_dim", "num_layers"):
            _positive_int(spec, key, field)
        if not isinstance(spec.get("bidirectional", False), bool):
            raise ValueError(f"{field}['bidirectional']: expected a bool, got {spec.get('bidirectional')!r}")


def build_encoder(modality: str, spec: Dict[str, Any]) -> nn.Module:
    """Build the encoder of ``modality`` from its spec (see :class:`MultimodalConfig`)."""
    validate_encoder_spec(modality, spec)
    return ENCODERS[_family(spec["encoder"])](modality, spec)


def run_stage(encoder: nn.Module, index: int, h: torch.Tensor) -> torch.Tensor:
    """``encoder.forward_stage(index, h)``, recomputed in backward when activation
    checkpointing is on (``MultimodalModel.activation_checkpointing_enable()``)."""
    func = getattr(encoder, "_gradient_checkpointing_func", None)
    if func is not None and getattr(encoder, "gradient_checkpointing", False) and encoder.training \
            and torch.is_grad_enabled():
        return func(encoder.forward_stage, index, h)
    return encoder.forward_stage(index, h)


def supports_stages(encoder: nn.Module) -> Optional[str]:
    """``None`` when ``encoder`` can run stage by stage, else the reason it cannot."""
    if isinstance(encoder, TimmEncoder):
        return encoder.stage_error
    needed = ("num_stages", "stage_dims", "channel_axis", "forward_stem", "forward_stage", "forward_pool")
    missing = [n for n in needed if not hasattr(encoder, n)]
    if missing:
        return f"{type(encoder).__name__} lacks the stage protocol ({', '.join(missing)})"
    return None


# ---------------------------------------------------------------------------------------------
# timm backbones
# ---------------------------------------------------------------------------------------------


def _pool_features(x: torch.Tensor, output_fmt: str) -> torch.Tensor:
    """Average a backbone output to ``(B, D)``: NCHW over dims (2, 3), NHWC over (1, 2), NLC over 1."""
    if x.dim() == 2:
        return x
    if x.dim() == 3:
        return x.mean(dim=1)
    if x.dim() == 4:
        return x.mean(dim=(1, 2)) if output_fmt == "NHWC" else x.mean(dim=(2, 3))
    raise ValueError(f"backbone output: expected 2-D to 4-D features, got shape {tuple(x.shape)}")


class TimmEncoder(nn.Module):
    """A timm backbone without classifier, returning pooled ``(B, D)`` features.

    Accepts ``(B, C, H, W)`` or ``(B, T, C, H, W)``; frames are folded into the batch
    and their pooled features averaged over T (= 3-D average pooling of the paper's
    visual encoder, since every frame has the same spatial size). Pooling is timm's
    own global average pooling (``num_classes=0``), which averages NCHW CNN maps over
    (H, W) and NHWC maps (Swin, ``output_fmt="NHWC"``) over (H, W) as well; should a
    backbone still return a map (e.g. ``global_pool=""``), it is averaged here
    according to the backbone's ``output_fmt``.

    Stage-wise execution (intermediate fusion) is available for ResNet-like models
    (``conv1``/``layer1..4``), ``stem``+``stages`` models (ConvNeXt, ...) and
    ``patch_embed``+``layers`` models (Swin), with single-frame inputs.
    """

    def __init__(self, modality: str, spec: Dict[str, Any]):
        super().__init__()
        import timm

        kwargs = {k: v for k, v in spec.items() if k not in TIMM_OWN_KEYS}
        self.modality = modality
        self.model_name = spec["encoder"][len("timm:") :]
        self.in_chans = int(spec.get("in_chans", 3))
        self.timm_kwargs = kwargs
        self.backbone = timm.create_model(self.model_name, pretrained=False, num_classes=0, in_chans=self.in_chans, **kwargs)
        # timm's non-persistent buffers (Swin's relative position index and attention masks)
        # are saved with the model: from_pretrained builds on the meta device and could not
        # recompute them, so they must come back from the checkpoint.
        self.computed_buffers = set()
        for name, mod in self.backbone.named_modules():
            for buf in list(mod._non_persistent_buffers_set):
                if getattr(mod, buf, None) is not None:
                    self.computed_buffers.add(f"{name}.{buf}" if name else buf)
            mod._non_persistent_buffers_set.clear()
        self.out_dim = int(self.backbone.num_features)
        self.output_fmt = str(getattr(self.backbone, "output_fmt", "NCHW"))
        self._plan = self._stage_plan()

    # ---- plain forward ----------------------------------------------------------------------
    def check_input(self, x: torch.Tensor, field: str) -> None:
        if x.dim() not in (4, 5):
            raise ValueError(
                f"{field}: expected (B, C, H, W) or (B, T, C, H, W) with C={self.in_chans}, got shape {tuple(x.shape)}"
            )
        channels = x.shape[-3]
        if channels != self.in_chans:
            raise ValueError(f"{field}: expected {self.in_chans} channels (dim -3), got {channels} in shape {tuple(x.shape)}")

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return _pool_features(self.backbone(x), self.output_fmt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            b, t = x.shape[:2]
            feats = self._encode(x.flatten(0, 1))
            return feats.view(b, t, -1).mean(dim=1)
        return self._encode(x)

    # ---- stage protocol ---------------------------------------------------------------------
    def _stage_plan(self) -> Optional[Dict[str, Any]]:
        bb = self.backbone
        info = {f["module"]: int(f["num_chs"]) for f in getattr(bb, "feature_info", [])}
        if all(hasattr(bb, n) for n in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")):
            names = [f"layer{i}" for i in range(1, 5)]
            stages = [getattr(bb, n) for n in names]
            kind = "resnet"
        elif hasattr(bb, "stem") and isinstance(getattr(bb, "stages", None), nn.Sequential):
            names = [f"stages.{i}" for i in range(len(bb.stages))]
            stages = list(bb.stages)
            kind = "stem_stages"
        elif hasattr(bb, "patch_embed") and isinstance(getattr(bb, "layers", None), nn.Sequential):
            names = [f"layers.{i}" for i in range(len(bb.layers))]
            stages = list(bb.layers)
            kind = "patch_layers"
        else:
            return None
        if not all(n in info for n in names):
            return None
        return {"kind": kind, "stages": stages, "dims": [info[n] for n in names]}

    @property
    def stage_error(self) -> Optional[str]:
        if self._plan is None:
            return (
                f"timm model {self.model_name!r} has no stage layout arl_hf can run stage by stage "
                "(ResNet-like conv1/layer1..4, stem+stages, or patch_embed+layers)"
            )
        return None

    @property
    def num_stages(self) -> int:
        return len(self._plan["stages"]) if self._plan else 0

    @property
    def stage_dims(self) -> List[int]:
        return list(self._plan["dims"]) if self._plan else []

    @property
    def channel_axis(self) -> int:
        return -1 if self.output_fmt == "NHWC" else 1

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        bb, kind = self.backbone, self._plan["kind"]
        if kind == "resnet":
            return bb.maxpool(bb.act1(bb.bn1(bb.conv1(x))))
        if kind == "stem_stages":
            return bb.stem(x)
        x = bb.patch_embed(x)
        if getattr(bb, "absolute_pos_embed", None) is not None:  # pragma: no cover - Swin variants with APE
            x = x + bb.absolute_pos_embed
        return x

    def forward_stage(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return self._plan["stages"][i](h)

    def forward_pool(self, h: torch.Tensor) -> torch.Tensor:
        bb, kind = self.backbone, self._plan["kind"]
        if kind == "stem_stages" and hasattr(bb, "norm_pre"):
            h = bb.norm_pre(h)
        elif kind == "patch_layers" and hasattr(bb, "norm"):
            h = bb.norm(h)
        return _pool_features(bb.forward_head(h), self.output_fmt)


# ---------------------------------------------------------------------------------------------
# vectors and feature sequences
# ---------------------------------------------------------------------------------------------


class MLPEncoder(nn.Module):
    """Linear + ReLU layers (no normalisation), ``(B, input_dim) -> (B, hidden_dims[-1])``.

    Each Linear+ReLU pair is one stage (a ``(B, D)`` vector, channels last).
    """

    channel_axis = -1

    def __init__(self, modality: str, spec: Dict[str, Any]):
        super().__init__()
        self.modality = modality
        self.input_dim = int(spec["input_dim"])
        layers = []
        prev = self.input_dim
        for d in spec["hidden_dims"]:
            layers += [nn.Linear(prev, d), nn.ReLU()]
            prev = d
        self.net = nn.Sequential(*layers)
        self.out_dim = prev
        self.stage_dims = [int(d) for d in spec["hidden_dims"]]
        self.num_stages = len(self.stage_dims)

    def check_input(self, x: torch.Tensor, field: str) -> None:
        if x.dim() != 2 or x.shape[-1] != self.input_dim:
            raise ValueError(f"{field}: expected shape (B, {self.input_dim}), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_stage(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return self.net[2 * i + 1](self.net[2 * i](h))

    def forward_pool(self, h: torch.Tensor) -> torch.Tensor:
        return h


class _SequenceEncoder(nn.Module):
    """Shared input check, stage loop and mean pooling of the feature-sequence encoders."""

    channel_axis = -1
    stages: nn.ModuleList
    DEFAULTS: Dict[str, Any] = {}

    def _setup(self, modality: str, spec: Dict[str, Any]) -> Dict[str, Any]:
        """Record modality and ``input_dim``; return the spec's options over :attr:`DEFAULTS`."""
        self.modality = modality
        self.input_dim = int(spec["input_dim"])
        return {**self.DEFAULTS, **{k: v for k, v in spec.items() if k in self.DEFAULTS}}

    def check_input(self, x: torch.Tensor, field: str) -> None:
        if x.dim() != 3 or x.shape[-1] != self.input_dim or x.shape[1] < 1:
            raise ValueError(f"{field}: expected a feature sequence (B, L, {self.input_dim}) with L >= 1, got {tuple(x.shape)}")

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.forward_stem(x)
        for i in range(self.num_stages):
            h = self.forward_stage(i, h)
        return self.forward_pool(h)


class TransformerSequenceEncoder(_SequenceEncoder):
    """Pre-norm Transformer encoder over a feature sequence, mean-pooled over time.

    ``(B, L, input_dim)`` -> Linear to ``d_model`` + learned positions -> ``num_layers``
    ``nn.TransformerEncoderLayer`` (one stage each) -> LayerNorm -> mean over L.
    """

    DEFAULTS = {"d_model": 64, "num_layers": 2, "num_heads": 4, "dim_feedforward": None, "dropout": 0.1, "max_len": 512}
    OPTIONS = ("input_dim",) + tuple(DEFAULTS)

    def __init__(self, modality: str, spec: Dict[str, Any]):
        super().__init__()
        opts = self._setup(modality, spec)
        d = int(opts["d_model"])
        self.max_len = int(opts["max_len"])
        self.proj = nn.Linear(self.input_dim, d)
        self.pos = nn.Parameter(torch.zeros(1, self.max_len, d))
        nn.init.normal_(self.pos, std=0.02)
        self.stages = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d,
                int(opts["num_heads"]),
                dim_feedforward=int(opts["dim_feedforward"] or 4 * d),
                dropout=float(opts["dropout"]),
                batch_first=True,
                norm_first=True,
            )
            for _ in range(int(opts["num_layers"]))
        )
        self.norm = nn.LayerNorm(d)
        self.out_dim = d
        self.stage_dims = [d] * len(self.stages)

    def check_input(self, x: torch.Tensor, field: str) -> None:
        super().check_input(x, field)
        if x.shape[1] > self.max_len:
            raise ValueError(f"{field}: sequence length {x.shape[1]} exceeds max_len={self.max_len} of its encoder")

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) + self.pos[:, : x.shape[1]]

    def forward_stage(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return self.stages[i](h)

    def forward_pool(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h).mean(dim=1)


class LSTMSequenceEncoder(_SequenceEncoder):
    """Stacked LSTM over a feature sequence (one layer per stage), mean-pooled over time."""

    DEFAULTS = {"hidden_dim": 64, "num_layers": 1, "bidirectional": False}
    OPTIONS = ("input_dim",) + tuple(DEFAULTS)

    def __init__(self, modality: str, spec: Dict[str, Any]):
        super().__init__()
        opts = self._setup(modality, spec)
        hidden, bi = int(opts["hidden_dim"]), bool(opts["bidirectional"])
        width = hidden * (2 if bi else 1)
        self.stages = nn.ModuleList(
            nn.LSTM(self.input_dim if i == 0 else width, hidden, batch_first=True, bidirectional=bi)
            for i in range(int(opts["num_layers"]))
        )
        self.out_dim = width
        self.stage_dims = [width] * len(self.stages)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_stage(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return self.stages[i](h)[0]

    def forward_pool(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=1)


register_encoder("timm")(TimmEncoder)
register_encoder("mlp")(MLPEncoder)
register_encoder("transformer")(TransformerSequenceEncoder)
register_encoder("lstm")(LSTMSequenceEncoder)
