"""ARL's in-graph gradient modulation must survive ``torch.compile`` (the GPU benchmark
compiles the model): the scales are read at backward time, not baked in at trace time."""

import torch

from arl_hf import MultimodalConfig, MultimodalModel
from arl_hf.strategies.base import GradientModulator


def _encoder_grads(compiled: bool, scales_per_step):
    torch.manual_seed(0)
    model = MultimodalModel(MultimodalConfig(num_labels=3))
    modulator = GradientModulator(model, ["audio", "visual"], "output")
    fn = torch.compile(model, backend="aot_eager") if compiled else model
    torch.manual_seed(1)
    x = {"audio": torch.randn(4, 16), "visual": torch.randn(4, 16)}
    grads = []
    for scales in scales_per_step:
        model.zero_grad()
        modulator.fired.clear()
        out = fn(**x, return_unimodal_logits=True)
        modulator.set_scales(scales)
        loss = out.logits.sum() + sum(v.sum() for v in out.unimodal_logits.values())
        loss.backward()
        grads.append([p.grad.clone() for p in model.encoders.parameters()])
        assert modulator.fired == {"audio", "visual"}
    return grads


def test_compiled_model_applies_the_scales_set_after_forward():
    steps = [None, torch.tensor([2.0, 3.0]), torch.tensor([5.0, 0.5])]
    eager = _encoder_grads(False, steps)
    compiled = _encoder_grads(True, steps)
    # eager reference: the scale multiplies the encoder gradients exactly
    n_audio = len(list(MultimodalModel(MultimodalConfig(num_labels=3)).encoders["audio"].parameters()))
    torch.testing.assert_close(eager[1][0], 2.0 * eager[0][0])
    torch.testing.assert_close(eager[2][n_audio], 0.5 * eager[0][n_audio])
    for step_e, step_c in zip(eager, compiled):
        for ge, gc in zip(step_e, step_c):
            torch.testing.assert_close(gc, ge)
