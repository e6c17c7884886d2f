"""Intermediate fusion: the encoders exchange information between their intermediate feature maps.

The two fusions of ARL's Table 3, on encoders that run stage by stage
(:func:`arl_hf.modeling.encoders.supports_stages`):

* ``mmtm``: MMTM (Joze et al., CVPR 2020). At each fusion point every stream is
  squeezed (global average over its non-channel axes), the squeezes are concatenated
  into one joint vector ``Z = ReLU(W [S_0; S_1; ...] + b)``, and every stream is
  re-scaled channel-wise by ``2 * sigmoid(W_m Z + b_m)``.
* ``cross_attention``: mmFormer-style cross-modal attention (Zhang et al., 2022).
  Each stream's feature map becomes a token sequence, projected to a shared width;
  the tokens of modality m attend (multi-head) to the tokens of all other modalities
  and the result is projected back and added to the stream (residual).

After the last fusion point the streams finish their stages, are pooled, and a late
fusion ``head`` (default ``concat``) gives the logits.

ARL (Sec. 3.2) with intermediate fusion:

* unimodal logits of m = the whole fusion path (blocks and head) with every other
  modality's input to every fusion block zeroed. Streams do not interact before the
  first fusion point, so the unimodal pass starts from the fused pass's stream states
  there; a zeroed modality's encoder is never run (its input to the blocks is zero
  by definition); each encoder runs its remaining stages once, on its own B samples;
  the blocks and the head see the M zeroed variants (specialised closed forms for
  ``mmtm`` and ``cross_attention``, a stacked M-fold batch for other blocks). In
  training mode the re-run stages use batch statistics but leave BatchNorm running
  statistics untouched (they keep estimating the fused path used at inference).
* gradient modulation scales the gradients of each modality's own encoder parameters
  by ``1 + a_m``; fusion blocks and head are shared and are not scaled. The model
  exposes ``arl_gradient_modulation = "parameters"`` so that
  :class:`~arl_hf.strategies.GradientModulator` hooks the encoder parameters.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import TimmEncoder, run_stage, supports_stages
from .fusion import FUSIONS, Fusion, build_fusion, register_fusion

Streams = Dict[str, torch.Tensor]


# ---- layout helpers: channel axis 1 (B, C, ...) or -1 (B, ..., C) ----------------------------------


def _squeeze(h: torch.Tensor, axis: int) -> torch.Tensor:
    """Global average over every axis but batch and channels -> ``(B, C)``."""
    if h.dim() == 2:
        return h
    dims = tuple(range(2, h.dim())) if axis == 1 else tuple(range(1, h.dim() - 1))
    return h.mean(dim=dims)


def _channelwise(g: torch.Tensor, like: torch.Tensor, axis: int) -> torch.Tensor:
    """Reshape ``(B, C)`` to broadcast over ``like`` along its channel axis."""
    extra = [1] * (like.dim() - 2)
    return g.view(g.shape[0], g.shape[1], *extra) if axis == 1 else g.view(g.shape[0], *extra, g.shape[1])


def _to_tokens(h: torch.Tensor, axis: int) -> torch.Tensor:
    """``(B, L, C)`` tokens of a stream (a ``(B, C)`` vector is one token)."""
    if h.dim() == 2:
        return h.unsqueeze(1)
    if axis == 1:
        return h.flatten(2).transpose(1, 2)
    return h.flatten(1, -2)


def _from_tokens(t: torch.Tensor, like: torch.Tensor, axis: int) -> torch.Tensor:
    if like.dim() == 2:
        return t.squeeze(1)
    if axis == 1:
        return t.transpose(1, 2).reshape(like.shape)
    return t.reshape(like.shape)


def _num_tokens(h: torch.Tensor, axis: int) -> int:
    if h.dim() == 2:
        return 1
    spatial = h.shape[2:] if axis == 1 else h.shape[1:-1]
    return int(math.prod(spatial))


@contextlib.contextmanager
def private_running_stats(modules: nn.Module) -> Iterator[None]:
    """Within the block, normalisation layers in training mode update throw-away copies of
    their running statistics; the originals are restored untouched afterwards.

    The buffers are swapped, not written back in place, so the autograd graph of the
    fused pass (which saved the originals) stays valid.
    """
    swapped: List[Tuple[nn.Module, Dict[str, torch.Tensor]]] = []
    for mod in modules.modules():
        if isinstance(mod, nn.modules.batchnorm._NormBase) and mod.training and mod.track_running_stats:
            saved = {}
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                buf = mod._buffers.get(name)
                if buf is not None:
                    saved[name] = buf
                    mod._buffers[name] = buf.clone()
            swapped.append((mod, saved))
    try:
        yield
    finally:
        for mod, saved in swapped:
            for name, buf in saved.items():
                mod._buffers[name] = buf


# ---- fusion blocks --------------------------------------------------------------------------------------


class FusionBlock(nn.Module):
    """One exchange between the streams at a fusion point: ``{m: h_m} -> {m: h_m'}``.

    ``forward_unimodal(h)`` gets, for each modality m, its stream in the variant where
    only m is present, and returns ``forward({m: h_m, others: 0})[m]`` for every m. The
    generic version stacks the M zeroed variants along the batch; subclasses override
    it with closed forms that skip the work on known zeros.
    """

    OPTIONS: Tuple[str, ...] = ()

    def __init__(self, channels: Mapping[str, int], axes: Mapping[str, int]):
        super().__init__()
        self.modalities = list(channels)
        self.channels = dict(channels)
        self.axes = dict(axes)

    def forward_unimodal(self, h: Streams) -> Streams:
        mods = self.modalities
        b = h[mods[0]].shape[0]
        batched = {}
        for j, n in enumerate(mods):
            zeros = torch.zeros_like(h[n])
            batched[n] = torch.cat([h[n] if i == j else zeros for i in range(len(mods))], dim=0)
        out = self.forward(batched)
        return {n: out[n][j * b : (j + 1) * b] for j, n in enumerate(mods)}


class MMTMBlock(FusionBlock):
    """Multimodal transfer module: cross-modal squeeze-and-excitation.

    ``Z = ReLU(W_z [S_0; ...; S_{M-1}] + b_z)`` with ``dim(Z) = sum_m C_m / reduction``;
    ``h_m' = h_m * 2 * sigmoid(W_m Z + b_m)`` (channel-wise).
    """

    OPTIONS = ("reduction",)

    def __init__(self, channels: Mapping[str, int], axes: Mapping[str, int], reduction: int = 4):
        super().__init__(channels, axes)
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"fusion_kwargs['reduction']: expected a positive int, got {reduction!r}")
        total = sum(self.channels.values())
        joint = max(1, total // reduction)
        self.squeeze_fc = nn.Linear(total, joint)
        self.excite = nn.ModuleDict({m: nn.Linear(joint, c) for m, c in self.channels.items()})

    def _rescale(self, z: torch.Tensor, h: torch.Tensor, m: str) -> torch.Tensor:
        gate = 2.0 * torch.sigmoid(self.excite[m](z))
        return h * _channelwise(gate, h, self.axes[m])

    def forward(self, h: Streams) -> Streams:
        s = torch.cat([_squeeze(h[m], self.axes[m]) for m in self.modalities], dim=-1)
        z = F.relu(self.squeeze_fc(s))
        return {m: self._rescale(z, h[m], m) for m in self.modalities}

    def forward_unimodal(self, h: Streams) -> Streams:
        # the squeeze of a zeroed stream is zero: Z only sees W_z's columns of m
        out, start = {}, 0
        for m in self.modalities:
            c = self.channels[m]
            w = self.squeeze_fc.weight[:, start : start + c]
            z = F.relu(F.linear(_squeeze(h[m], self.axes[m]), w, self.squeeze_fc.bias))
            out[m] = self._rescale(z, h[m], m)
            start += c
        return out


class CrossAttentionBlock(FusionBlock):
    """mmFormer-style cross-modal attention between the streams' token sequences.

    ``t_m = LN_m(P_m tokens(h_m))`` (width ``dim``); for each m, multi-head attention
    with queries from ``t_m`` and keys/values from the concatenated tokens of all other
    modalities; ``h_m' = h_m + O_m(attention)`` (O_m projects back to ``C_m``). The
    attention projections are shared, ``P_m``/``LN_m``/``O_m`` are per modality.
    """

    OPTIONS = ("dim", "num_heads")

    def __init__(self, channels: Mapping[str, int], axes: Mapping[str, int], dim: int = 64, num_heads: int = 4):
        super().__init__(channels, axes)
        if len(self.modalities) < 2:
            raise ValueError(f"fusion: 'cross_attention' needs at least two modalities, got {self.modalities}")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"fusion_kwargs['dim']: expected a positive int, got {dim!r}")
        if not isinstance(num_heads, int) or num_heads < 1 or dim % num_heads:
            raise ValueError(
                f"fusion_kwargs['num_heads']: expected a positive int dividing dim={dim}, got {num_heads!r}"
            )
        self.dim, self.num_heads = dim, num_heads
        self.proj_in = nn.ModuleDict({m: nn.Linear(c, dim) for m, c in self.channels.items()})
        self.norm = nn.ModuleDict({m: nn.LayerNorm(dim) for m in self.modalities})
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.proj_out = nn.ModuleDict({m: nn.Linear(dim, c) for m, c in self.channels.items()})

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, dim) -> (B, H, L, dim/H)
        b, length, _ = x.shape
        return x.view(b, length, self.num_heads, self.dim // self.num_heads).transpose(1, 2)

    def _out(self, attn: torch.Tensor, h: torch.Tensor, m: str) -> torch.Tensor:
        b, _, length, _ = attn.shape
        merged = attn.transpose(1, 2).reshape(b, length, self.dim)
        return h + _from_tokens(self.proj_out[m](self.o(merged)), h, self.axes[m])

    def forward(self, h: Streams) -> Streams:
        toks = {m: self.norm[m](self.proj_in[m](_to_tokens(h[m], self.axes[m]))) for m in self.modalities}
        out = {}
        for m in self.modalities:
            kv = torch.cat([toks[j] for j in self.modalities if j != m], dim=1)
            attn = F.scaled_dot_product_attention(
                self._heads(self.q(toks[m])), self._heads(self.k(kv)), self._heads(self.v(kv))
            )
            out[m] = self._out(attn, h[m], m)
        return out

    def forward_unimodal(self, h: Streams) -> Streams:
        # A zeroed stream j gives L_j identical tokens c_j = LN_j(bias of P_j): attending to
        # them equals attending to the single key/value c_j with log(L_j) added to its logit.
        const = {j: self.norm[j](self.proj_in[j].bias) for j in self.modalities}
        counts = {j: _num_tokens(h[j], self.axes[j]) for j in self.modalities}
        out = {}
        for m in self.modalities:
            others = [j for j in self.modalities if j != m]
            q = self._heads(self.q(self.norm[m](self.proj_in[m](_to_tokens(h[m], self.axes[m])))))
            c = torch.stack([const[j] for j in others]).unsqueeze(0)  # (1, M-1, dim)
            b = q.shape[0]
            k = self._heads(self.k(c)).expand(b, -1, -1, -1)
            v = self._heads(self.v(c)).expand(b, -1, -1, -1)
            bias = torch.tensor([math.log(counts[j]) for j in others], dtype=q.dtype, device=q.device)
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.view(1, 1, 1, -1))
            out[m] = self._out(attn, h[m], m)
        return out


# ---- the intermediate fusion modules ----------------------------------------------------------------


class IntermediateFusion(Fusion):
    """Fusion blocks between encoder stages, then a late-fusion head on the pooled features.

    fusion_kwargs:
        stages: fusion points, as stage indices of every encoder (negative from the end:
            ``-1`` is each encoder's last stage), or ``{modality: [indices]}``; each
            point sits after that stage. Default: the block's own (``mmtm``: the last
            three stages, ``cross_attention``: the last stage).
        head: late fusion on the pooled features (default ``"concat"``).
        head_kwargs: options of the head.
        other keys: options of the block (``mmtm``: ``reduction``; ``cross_attention``:
            ``dim``, ``num_heads``).

    The model calls :meth:`run` with its encoders; :meth:`forward` and
    :meth:`unimodal_logits` on features alone are not defined for intermediate fusion.
    Inputs of image encoders must be single frames ``(B, C, H, W)`` (the paper's setting).
    """

    intermediate = True
    block_cls = FusionBlock
    default_points: Sequence[int] = (-1,)

    def __init__(
        self,
        dims: Mapping[str, int],
        num_labels: int,
        encoders: Mapping[str, nn.Module],
        stages: Any = None,
        head: str = "concat",
        head_kwargs: Optional[Dict[str, Any]] = None,
        **block_kwargs: Any,
    ):
        super().__init__(dims, num_labels)
        name = self.fusion_name
        unknown = sorted(set(block_kwargs) - set(self.block_cls.OPTIONS))
        if unknown:
            raise ValueError(
                f"fusion_kwargs[{unknown[0]!r}]: unknown option for fusion {name!r}; expected "
                f"{sorted(('stages', 'head', 'head_kwargs') + self.block_cls.OPTIONS)}"
            )
        if len(self.modalities) < 2:
            raise ValueError(f"fusion: {name!r} fuses at least two modalities, got {self.modalities}")
        for m in self.modalities:
            err = supports_stages(encoders[m])
            if err:
                raise ValueError(
                    f"modalities[{m!r}]['encoder']: fusion {name!r} runs the encoders stage by stage, but {err}"
                )
        self.num_stages = {m: int(encoders[m].num_stages) for m in self.modalities}
        self.axes = {m: int(encoders[m].channel_axis) for m in self.modalities}
        self.points = self._resolve_points(stages)
        self.blocks = nn.ModuleList(
            self.block_cls({m: int(encoders[m].stage_dims[p[m]]) for m in self.modalities}, self.axes, **block_kwargs)
            for p in self.points
        )
        if head not in FUSIONS or FUSIONS[head].intermediate:
            late = sorted(k for k, v in FUSIONS.items() if not v.intermediate)
            raise ValueError(f"fusion_kwargs['head']: expected a late fusion, one of {late}, got {head!r}")
        self.head = build_fusion(head, dims, num_labels, **(head_kwargs or {}))

    def _resolve_points(self, stages: Any) -> List[Dict[str, int]]:
        field = "fusion_kwargs['stages']"
        if stages is None:
            shortest = min(self.num_stages.values())
            stages = [p for p in self.default_points if -p <= shortest] or [-1]
        if isinstance(stages, Mapping):
            if set(stages) != set(self.modalities):
                raise ValueError(f"{field}: expected a list of stage indices or a dict keyed by {self.modalities}, "
                                 f"got keys {sorted(stages)}")
            per = {m: list(stages[m]) for m in self.modalities}
        elif isinstance(stages, (list, tuple)):
            per = {m: list(stages) for m in self.modalities}
        else:
            raise ValueError(f"{field}: expected a list of stage indices, got {stages!r}")
        counts = {len(v) for v in per.values()}
        if len(counts) != 1 or 0 in counts:
            raise ValueError(f"{field}: every modality needs the same, non-zero number of fusion points, got {per}")
        resolved = {}
        for m, idx in per.items():
            n = self.num_stages[m]
            out = []
            for s in idx:
                if not isinstance(s, int) or isinstance(s, bool) or not -n <= s < n:
                    raise ValueError(f"{field}: stage {s!r} out of range for {m!r}, whose encoder has {n} stages")
                out.append(s % n)
            if any(b <= a for a, b in zip(out, out[1:])):
                raise ValueError(f"{field}: fusion points of {m!r} must be strictly increasing stages, got {out}")
            resolved[m] = out
        return [{m: resolved[m][p] for m in self.modalities} for p in range(len(next(iter(resolved.values()))))]

    # ---- not defined on pooled features alone ---------------------------------------------------
    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise RuntimeError(
            f"fusion {self.fusion_name!r} is intermediate: call run(encoders, inputs) (MultimodalModel does)"
        )

    def unimodal_logits(self, features: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        raise RuntimeError(
            f"fusion {self.fusion_name!r} is intermediate: unimodal logits come from run(..., unimodal=True)"
        )

    # ---- the stage-wise forward -----------------------------------------------------------------------
    @staticmethod
    def _advance(encoder: nn.Module, h: torch.Tensor, done: int, upto: int) -> torch.Tensor:
        for s in range(done + 1, upto + 1):
            h = run_stage(encoder, s, h)
        return h

    def run(
        self, encoders: Mapping[str, nn.Module], inputs: Mapping[str, torch.Tensor], unimodal: bool = False
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], Optional[Dict[str, torch.Tensor]]]:
        """Fused logits, pooled features and (with ``unimodal``) the unimodal logits."""
        mods = self.modalities
        for m in mods:
            if isinstance(encoders[m], TimmEncoder) and inputs[m].dim() != 4:
                raise ValueError(
                    f"{m}: intermediate fusion {self.fusion_name!r} takes one frame per sample, (B, C, H, W); "
                    f"got shape {tuple(inputs[m].shape)} (select one frame in preprocessing)"
                )
        last = {m: self.num_stages[m] - 1 for m in mods}
        h = {m: encoders[m].forward_stem(inputs[m]) for m in mods}
        done = {m: -1 for m in mods}
        start: Streams = {}
        for p, point in enumerate(self.points):
            h = {m: self._advance(encoders[m], h[m], done[m], point[m]) for m in mods}
            done = point
            if p == 0:
                start = h
            h = self.blocks[p](h)
        h = {m: self._advance(encoders[m], h[m], done[m], last[m]) for m in mods}
        features = {m: encoders[m].forward_pool(h[m]) for m in mods}
        logits = self.head(features)
        if not unimodal:
            return logits, features, None
        # unimodal pass: every modality's own stream, all others zero at every block input
        with private_running_stats(nn.ModuleList(encoders[m] for m in mods)):
            u = start
            done = self.points[0]
            for p, point in enumerate(self.points):
                if p > 0:
                    u = {m: self._advance(encoders[m], u[m], done[m], point[m]) for m in mods}
                    done = point
                u = self.blocks[p].forward_unimodal(u)
            u = {m: self._advance(encoders[m], u[m], done[m], last[m]) for m in mods}
            uni_features = {m: encoders[m].forward_pool(u[m]) for m in mods}
        return logits, features, self.head.unimodal_logits(uni_features)


@register_fusion("mmtm")
class MMTMFusion(IntermediateFusion):
    """MMTM blocks (squeeze-and-excitation exchange) after the last three stages by default."""

    block_cls = MMTMBlock
    default_points = (-3, -2, -1)


@register_fusion("cross_attention")
class CrossAttentionFusion(IntermediateFusion):
    """mmFormer-style cross-modal attention after the last stage by default."""

    block_cls = CrossAttentionBlock
    default_points = (-1,)
