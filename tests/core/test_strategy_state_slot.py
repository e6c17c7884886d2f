"""The model's generic ``strategy_state`` slot: rebuilt from ``config.strategy_state`` (the layout a
checkpoint records) by the modeling side alone, filled from ``model.safetensors`` under the same
tensor names as before."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_trainer import mlp_model

from arl_hf import MultimodalModel
from arl_hf.modeling.state import StrategyState, state_from_spec, state_spec

#: ``config.strategy_state`` as checkpoints record it (an MLA-trained model)
SPEC = {"strategy": "mla", "tensors": {
    "plain.weight": {"shape": [3, 8], "dtype": "float32", "parameter": True},
    "plain.bias": {"shape": [3], "dtype": "float32", "parameter": True},
    "projector": {"shape": [8, 8], "dtype": "float32", "parameter": False},
    "ledger.epoch": {"shape": [], "dtype": "int64", "parameter": False},
}}


def test_a_checkpoint_with_strategy_state_loads_into_the_slot(tmp_path):
    model = mlp_model()
    model.save_pretrained(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    config["strategy_state"] = SPEC
    (tmp_path / "config.json").write_text(json.dumps(config))
    tensors = load_file(str(tmp_path / "model.safetensors"))
    g = torch.Generator().manual_seed(0)
    saved = {"strategy_state.plain.weight": torch.randn(3, 8, generator=g),
             "strategy_state.plain.bias": torch.randn(3, generator=g),
             "strategy_state.projector": torch.randn(8, 8, generator=g),
             "strategy_state.ledger.epoch": torch.tensor(4)}
    save_file({**tensors, **saved}, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})

    loaded = MultimodalModel.from_pretrained(str(tmp_path))
    assert isinstance(loaded.strategy_state, StrategyState) and loaded.strategy_state.strategy == "mla"
    state = loaded.state_dict()
    for name, value in saved.items():
        assert torch.equal(state[name], value), name
    assert isinstance(loaded.strategy_state.plain.weight, torch.nn.Parameter)
    assert state_spec(loaded.strategy_state) == SPEC
    loaded.save_pretrained(str(tmp_path / "again"))
    again = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert {k for k in again if k.startswith("strategy_state.")} == set(saved)


@pytest.mark.parametrize("spec, field", [
    ({"strategy": "mla"}, "config.strategy_state"),
    ({"strategy": "mla", "tensors": {"w": {"shape": [2], "dtype": "float99"}}},
     r"config.strategy_state.tensors\['w'\].dtype"),
])
def test_a_malformed_layout_is_a_clear_error(spec, field):
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        state_from_spec(spec)
