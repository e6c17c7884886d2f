"""Step overhead of ARL: ``ARLTrainer`` step time / plain ``transformers.Trainer`` step time.

Issue 7, targets 1 and 2. Same :class:`~arl_hf.MultimodalModel` (two identical copies),
SGD, the default: ResNet-18 encoders, concat fusion, batch 16, audio 1x128x96, visual one
frame 3x112x112. The plain Trainer computes the fused loss only (no unimodal logits); ARL
adds the unimodal logits, Eq. 22's loss, the statistics, the coefficients and the
in-graph gradient scaling. Runs interleave (ABBA) and the ratio is the median of per-pair
ratios. ``ARLConfig.validate_inputs`` (one host sync per step by design) is measured on
and off; both ARL variants run with the finite-value step guard on (``check_finite``, the
default: the loss and gradient-norm checks ride on that sync, or on logging steps).

Targets: <= 1.03 for late fusion (concat), <= 2.1 for intermediate fusion
(``--fusion mmtm`` / ``--fusion cross_attention``, once registered in
:mod:`arl_hf.modeling.fusion`).

    python benchmarks/step_overhead.py                       # the issue's setting
    python benchmarks/step_overhead.py --fusion mmtm
    python benchmarks/step_overhead.py --tiny --pairs 2      # smoke test
    python benchmarks/step_overhead.py --hf                  # ViT + BERT (transformers, random init)

``--hf``: an image modality encoded by a ViT (``--hf-image-size`` pixels, patch 8) and a text modality
by a BERT (``--hf-text-length`` token ids with an attention mask, dict inputs), both ``hf:`` encoders
built from transformers configs (``--hf-hidden`` wide, ``--hf-layers`` deep, random weights, no Hub).
Besides the ratio it prints ARL's fixed per-step cost: the median per-pair difference of step times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import torch

LATE_FUSIONS = ("concat", "sum", "share", "film", "gated")


def parse_shape(text: str) -> List[int]:
    try:
        shape = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}")
    if not shape or any(s < 1 for s in shape):
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return shape


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default="resnet18", help="timm encoder for both modalities, or 'mlp'")
    p.add_argument("--fusion", default="concat", help="fusion name (concat; mmtm, cross_attention: target 2)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--audio-shape", type=parse_shape, default=[1, 128, 96], help="C,H,W of the spectrogram")
    p.add_argument("--visual-shape", type=parse_shape, default=None,
                   help="[T,]C,H,W of the frames (default 1,3,112,112; 3,112,112 for intermediate fusion, "
                        "which takes one frame as (B, C, H, W))")
    p.add_argument("--num-labels", type=int, default=6)
    p.add_argument("--pairs", type=int, default=6, help="interleaved rounds (each runs every variant once)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per block")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of each block")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: 1 on CPU, so CPU time measures work, not spinning)")
    p.add_argument("--clock", choices=["auto", "wall", "cpu"], default="auto",
                   help="what the headline ratio times: 'cpu' (process CPU time, robust on a shared CPU; "
                        "default on CPU) or 'wall' (default on GPU)")
    p.add_argument("--target", type=float, default=None, help="default: 1.03 late fusion, 2.1 intermediate")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--tiny", action="store_true", help="MLP encoders on 8-d inputs, batch 4 (smoke test)")
    p.add_argument("--hf", action="store_true", help="ViT (image) + BERT (text) hf: encoders, random init")
    p.add_argument("--hf-hidden", type=int, default=128, help="hidden size of both transformers (--hf)")
    p.add_argument("--hf-layers", type=int, default=3, help="layers of both transformers (--hf)")
    p.add_argument("--hf-image-size", type=int, default=64, help="image side in pixels, patch 8 (--hf)")
    p.add_argument("--hf-text-length", type=int, default=64, help="tokens per text (--hf)")
    p.add_argument("--hf-base", action="store_true",
                   help="--hf with ViT-base (224x224, patch 16) + BERT-base: the transformers default configs")
    return p


def hf_specs(hidden: int, layers: int, image_size: int, base: bool = False) -> Dict[str, Dict[str, Any]]:
    """Modality specs of a ViT (``image``) and a BERT (``text``) ``hf:`` encoder built from transformers
    configs with random weights (``pretrained: False``: no checkpoint is read). ``base``: the
    transformers defaults (ViT-base 224x224 patch 16, BERT-base)."""
    from transformers import BertConfig, ViTConfig

    if base:
        vit, bert = ViTConfig(), BertConfig()
    else:
        size = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                    intermediate_size=4 * hidden)
        vit = ViTConfig(image_size=image_size, patch_size=8, **size)
        bert = BertConfig(vocab_size=1000, max_position_embeddings=512, **size)
    return {"image": {"encoder": "hf:vit", "hf_config": vit.to_dict(), "pretrained": False},
            "text": {"encoder": "hf:bert", "hf_config": bert.to_dict(), "pretrained": False,
                     "pooler_weights": False}}


def hf_batches(num: int, batch_size: int, image_size: int, text_length: int, num_labels: int, vocab: int,
               device: str = "cpu", seed: int = 0) -> List[Dict[str, Any]]:
    """``num`` batches ``{"image": (B, 3, S, S), "text": {"input_ids", "attention_mask"} (B, L), "labels"}``;
    the texts have random lengths (the mask zeroes their padding)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num):
        lengths = torch.randint(text_length // 2, text_length + 1, (batch_size,), generator=g)
        mask = (torch.arange(text_length)[None, :] < lengths[:, None]).long()
        ids = torch.randint(5, vocab, (batch_size, text_length), generator=g) * mask
        out.append({"image": torch.randn(batch_size, 3, image_size, image_size, generator=g).to(device),
                    "text": {"input_ids": ids.to(device), "attention_mask": mask.to(device)},
                    "labels": torch.randint(0, num_labels, (batch_size,), generator=g).to(device)})
    return out


def run(args: argparse.Namespace) -> Dict[str, Any]:
    cuda = args.device.startswith("cuda")
    if args.threads is None and not cuda:
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = args.clock if args.clock != "auto" else ("wall" if cuda else "cpu")
    if args.visual_shape is None:
        args.visual_shape = [1, 3, 112, 112] if args.fusion in LATE_FUSIONS else [3, 112, 112]
    if args.tiny:
        args.encoder, args.batch_size = "mlp", 4
        args.audio_shape, args.visual_shape = [8], [8]
    mlp_dims = (args.audio_shape[-1], args.visual_shape[-1]) if args.encoder == "mlp" else None
    shapes = {"audio": args.audio_shape, "visual": args.visual_shape}
    target = args.target if args.target is not None else (1.03 if args.fusion in LATE_FUSIONS else 2.1)

    def factory():
        if args.hf:
            from arl_hf import MultimodalConfig, MultimodalModel

            torch.manual_seed(0)
            specs = hf_specs(args.hf_hidden, args.hf_layers, args.hf_image_size, base=args.hf_base)
            return MultimodalModel(MultimodalConfig(modalities=specs, num_labels=args.num_labels, fusion=args.fusion))
        return C.build_model(args.encoder, args.fusion, args.num_labels, mlp_dims=mlp_dims)

    args.hf = args.hf or args.hf_base
    if args.hf_base:
        args.hf_image_size = 224
    models = C.twin_models(factory, 3)
    if args.hf:
        args.encoder = ("hf ViT-base+BERT-base" if args.hf_base
                        else f"hf ViT+BERT (hidden {args.hf_hidden}, {args.hf_layers} layers)")
        shapes = {"image": [3, args.hf_image_size, args.hf_image_size], "text": [args.hf_text_length]}
        args.audio_shape, args.visual_shape = shapes["text"], shapes["image"]
        batches = hf_batches(4, args.batch_size, args.hf_image_size, args.hf_text_length, args.num_labels,
                             vocab=1000, device=args.device)
    else:
        batches = C.synthetic_batches(4, args.batch_size, shapes, args.num_labels, device=args.device)
    common = dict(device=args.device, precision=args.precision, warmup=args.warmup, steps=args.steps)
    benches = [
        C.make_bench("plain", models[0], batches, strategy=None, **common),
        C.make_bench("arl", models[1], batches, strategy="arl", **common),
        C.make_bench("arl_no_validate", models[2], batches, strategy="arl",
                     arl_overrides={"validate_inputs": False}, **common),
    ]
    res = C.interleave(benches, args.pairs, reference="plain", clock=clock)
    for c in ("cpu", "wall"):  # ARL's fixed per-step cost: median per-pair difference of step times
        steps = res[c]["step_s"]
        res[c]["median_extra_s"] = {
            name: statistics.median(t - p for t, p in zip(steps[name], steps["plain"]))
            for name in steps if name != "plain"}
    return {
        "benchmark": "step_overhead",
        "setting": {
            "encoder": args.encoder,
            "hf": bool(args.hf),
            "fusion": args.fusion,
            "batch_size": args.batch_size,
            "audio_shape": args.audio_shape,
            "visual_shape": args.visual_shape,
            "optimizer": "SGD(lr=1e-3, momentum=0.9, weight_decay=1e-4)",
            "precision": args.precision,
            "device": args.device,
            "pairs": args.pairs,
            "steps_per_block": args.steps,
            "warmup_steps_per_block": args.warmup,
            "torch_threads": torch.get_num_threads(),
            "clock": clock,
        },
        "machine": C.machine_info(),
        "target": target,
        **res,
    }


def report(r: Dict[str, Any]) -> str:
    s = r["setting"]
    lines = [
        f"step_overhead: {s['encoder']} encoders, {s['fusion']} fusion, batch {s['batch_size']}, "
        f"{'text' if s.get('hf') else 'audio'} {s['audio_shape']}, "
        f"{'image' if s.get('hf') else 'visual'} {s['visual_shape']}, {s['precision']} on {s['device']} "
        f"({r['machine'].get('cpu_count')} CPUs, {s['torch_threads']} torch threads), {s['pairs']} pairs x "
        f"{s['steps_per_block']} steps; headline clock: {s['clock']}",
    ]
    for clock in ("cpu", "wall"):
        f = r[clock]
        lines.append(f"  [{clock} time] median step: plain {f['median_step_s']['plain'] * 1e3:.1f} ms | ARL "
                     f"{f['median_step_s']['arl'] * 1e3:.1f} ms | ARL validate_inputs=False "
                     f"{f['median_step_s']['arl_no_validate'] * 1e3:.1f} ms")
        extra = f.get("median_extra_s", {})
        if extra:
            lines.append(f"  [{clock} time] ARL's fixed per-step cost (median ARL - plain): "
                         f"{extra['arl'] * 1e3:.2f} ms | validate_inputs=False {extra['arl_no_validate'] * 1e3:.2f} ms")
        lines.append(f"  [{clock} time] per-pair ARL/plain: " + " ".join(f"{x:.3f}" for x in f["ratios"]["arl"])
                     + " | no-validate: " + " ".join(f"{x:.3f}" for x in f["ratios"]["arl_no_validate"]))
    for name, label in (("arl", "validate_inputs=True "), ("arl_no_validate", "validate_inputs=False")):
        v = r["median_ratio"][name]
        lines.append(f"  ARL/plain ({label}, {s['clock']} time): {v:.3f}  {C.verdict(v, r['target'])}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    return C.run_and_report(build_parser().parse_args(argv), run, report)


if __name__ == "__main__":
    main()
