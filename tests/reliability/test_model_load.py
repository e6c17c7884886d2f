"""Loading a checkpoint that lacks tensors of the model (or holds them at another size): every
tensor that loading leaves out is initialised as in a newly built model, whatever the memory
held before, and the loaded tensors are the saved ones. A newly built model is unchanged."""

from __future__ import annotations

import hashlib
import importlib.util
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from arl_hf import MultimodalConfig, MultimodalModel

# the model cases of tests/modeling (every encoder family and fusion), loaded under their own name
_CASES_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "modeling", "conftest.py")
_spec_obj = importlib.util.spec_from_file_location("modeling_cases", _CASES_FILE)
_cases = importlib.util.module_from_spec(_spec_obj)
_spec_obj.loader.exec_module(_cases)
CASES, LAYOUTS, case_inputs = _cases.CASES, _cases.LAYOUTS, _cases.case_inputs

CNN = {"audio": {"encoder": "cnn", "in_chans": 1, "channels": [4, 8]},
       "visual": {"encoder": "mlp", "input_dim": 8, "hidden_dims": [16]}}
CNN_SHAPES = {"audio": (1, 16, 16), "visual": (8,)}

#: SHA-256 (first 16 hex digits) of every tensor of a model built with ``torch.manual_seed(0)``, and
#: the next ``torch.randint`` draw after building, for each model case and init scheme, as the code
#: gave them before loading filled missing tensors; recorded with these versions of torch and timm
#: (the versions of constraints.txt: other releases may draw their initialisations differently)
BUILT_WITH = {"torch": "2.14.1", "timm": "1.0.31"}
BUILT = {
    "cnn/authors": "fde663dd79fe9457:1249148990",
    "cnn/timm": "be2df48790febf68:1452381657",
    "concat/authors": "70c125f3f0b7af1f:1889564068",
    "concat/timm": "98f92271ba86dac2:612150117",
    "cross_attention-seq3/authors": "8a34ee7b20b1e0c7:2043872121",
    "cross_attention-seq3/timm": "5afebbcb53c863ad:1490942693",
    "cross_attention-swin/authors": "7b1ff4d396bd5054:1767147297",
    "cross_attention-swin/timm": "f5ca559e4bc701ac:1635752664",
    "cross_attention/authors": "e085c9c8bc081433:258437113",
    "cross_attention/timm": "b4fb77af727d17db:794628154",
    "film/authors": "4dd2c01527209f10:963727405",
    "film/timm": "e6e6ab196854b465:1471318616",
    "gated/authors": "f3091d60046989cc:401142092",
    "gated/timm": "66356a0bf39d7528:634911478",
    "mmtm-seq3/authors": "71ede838b184ca59:1772787437",
    "mmtm-seq3/timm": "a39126a6fc54d24a:1330128389",
    "mmtm/authors": "33a8f518fd54c8d4:1032843871",
    "mmtm/timm": "5a382d36b623910c:934406455",
    "sum/authors": "0c650301931bc47f:1466740938",
    "sum/timm": "1e3fca440b8d916d:1080553346",
}


def _spec(name):
    if name == "cnn":
        return CNN, "concat", {}, CNN_SHAPES
    layout, fusion, kwargs = CASES[name]
    specs, shapes = LAYOUTS[layout]
    return specs, fusion, dict(kwargs), shapes


def _config(name, init="timm", num_labels=3, **extra):
    specs, fusion, kwargs, _ = _spec(name)
    return MultimodalConfig(modalities=specs, num_labels=num_labels, fusion=fusion, fusion_kwargs=kwargs, init=init,
                            **extra)


def _inputs(name, batch=3):
    if name == "cnn":
        g = torch.Generator().manual_seed(1)
        return {m: torch.randn(batch, *s, generator=g) for m, s in CNN_SHAPES.items()}
    return case_inputs(name, batch=batch)


def _digest(model):
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:16]


@pytest.fixture
def garbage(monkeypatch):
    """Make the uninitialised tensors loading creates (``torch.empty_like``) hold the given garbage,
    as memory left by earlier allocations would: ``garbage(value)``."""
    original = torch.empty_like

    def install(value):
        def filled(*args, **kwargs):
            t = original(*args, **kwargs)
            if t.device.type != "meta":
                t.fill_(value if t.is_floating_point() else 123456)
            return t

        monkeypatch.setattr(torch, "empty_like", filled)

    return install


def _save(tmp_path, model, drop=()):
    """Save ``model``; its weights file without the tensors for which ``drop(name)`` holds."""
    out = str(tmp_path / "ckpt")
    model.save_pretrained(out)
    path = os.path.join(out, "model.safetensors")
    saved = load_file(path)
    kept = {k: v for k, v in saved.items() if not drop(k)} if drop else saved
    save_file(kept, path, metadata={"format": "pt"})
    return out, saved, sorted(set(saved) - set(kept))


def _load(path, seed, **kwargs):
    torch.manual_seed(seed)
    return MultimodalModel.from_pretrained(path, **kwargs).eval()


@pytest.mark.parametrize("name", ["cnn"] + sorted(CASES))
@pytest.mark.parametrize("init", ["timm", "authors"])
def test_a_newly_built_model_is_unchanged(name, init):
    import timm

    installed = {"torch": torch.__version__.split("+")[0], "timm": timm.__version__}
    uses_timm = any(str(s.get("encoder", "")).startswith("timm:") for s in _spec(name)[0].values())
    for lib in ("torch", "timm") if uses_timm else ("torch",):
        if installed[lib] != BUILT_WITH[lib]:
            pytest.skip(f"hashes recorded with {lib} {BUILT_WITH[lib]}, installed {installed[lib]}")
    torch.manual_seed(0)
    model = MultimodalModel(_config(name, init))
    assert f"{_digest(model)}:{int(torch.randint(0, 2**31, (1,)))}" == BUILT[f"{name}/{init}"]


@pytest.mark.parametrize("name", ["cnn"] + sorted(CASES))
def test_a_new_model_under_init_timm_holds_its_modules_own_initialisation(name):
    """Any torch / timm version: building the encoders and the fusion alone, from the same seed, in
    the model's order, gives the same tensors (the model re-initialises nothing)."""
    from arl_hf.modeling import build_encoder, build_fusion

    config = _config(name)
    torch.manual_seed(0)
    model = MultimodalModel(config)
    torch.manual_seed(0)
    encoders = torch.nn.ModuleDict({m: build_encoder(m, spec) for m, spec in config.modalities.items()})
    fusion = build_fusion(config.fusion, {m: e.out_dim for m, e in encoders.items()}, 3, encoders=encoders,
                          **config.fusion_kwargs)
    built = {**{f"encoders.{k}": v for k, v in encoders.state_dict().items()},
             **{f"fusion.{k}": v for k, v in fusion.state_dict().items()}}
    state = model.state_dict()
    assert sorted(state) == sorted(built)
    for k, v in built.items():
        assert torch.equal(state[k], v), k


@pytest.mark.parametrize("name", ["cnn", "mmtm", "cross_attention-seq3", "cross_attention-swin"])
@pytest.mark.parametrize("init", ["timm", "authors"])
def test_tensors_missing_from_the_checkpoint_are_initialised_as_in_a_new_model(tmp_path, garbage, name, init):
    torch.manual_seed(3)
    trained = MultimodalModel(_config(name, init))
    # every other tensor, and the fusion whole, are left out of the file
    order = sorted(trained.state_dict())
    dropped_every_other = set(order[::2])
    path, saved, dropped = _save(tmp_path, trained, drop=lambda k: k in dropped_every_other or k.startswith("fusion."))
    assert dropped and any(k.startswith("fusion.") for k in dropped)
    x = _inputs(name)
    runs = []
    for value in (float("nan"), 1e30):
        garbage(value)
        model = _load(path, seed=11)
        state = model.state_dict()
        for k, v in saved.items():
            if k not in dropped:
                assert torch.equal(state[k], v), k
        with torch.no_grad():
            logits = model(**x).logits
        assert torch.isfinite(logits).all()
        runs.append((logits, state))
    assert torch.equal(runs[0][0], runs[1][0])
    # the missing tensors are those of a model of the same config built from the same seed
    torch.manual_seed(11)
    fresh = MultimodalModel(_config(name, init)).state_dict()
    for k in dropped:
        assert torch.equal(runs[0][1][k], fresh[k]), k
    # another seed, other values for the weights left out
    weight = next(k for k in dropped if k.startswith("fusion.") and k.endswith("weight"))
    assert not torch.equal(_load(path, seed=12).state_dict()[weight], runs[0][1][weight])


def test_a_resized_head_is_initialised_and_reproducible(tmp_path, garbage):
    torch.manual_seed(0)
    path, saved, _ = _save(tmp_path, MultimodalModel(_config("cnn")))
    x = _inputs("cnn")
    logits = []
    for value in (float("nan"), -7e33):
        garbage(value)
        model = _load(path, seed=5, num_labels=5, ignore_mismatched_sizes=True)
        assert model.fusion.fc.weight.shape == (5, 24)
        state = model.state_dict()
        for k, v in saved.items():
            if not k.startswith("fusion.fc"):
                assert torch.equal(state[k], v), k
        with torch.no_grad():
            out = model(**x).logits
        assert out.shape == (3, 5) and torch.isfinite(out).all()
        logits.append(out)
        # torch's own Linear init: |w| <= 1/sqrt(fan_in)
        assert 0 < model.fusion.fc.weight.abs().max() <= 24 ** -0.5
    assert torch.equal(logits[0], logits[1])


def test_computed_buffers_and_strategy_state_left_out_are_rebuilt(tmp_path, garbage):
    spec = {"strategy": "custom", "tensors": {"head.weight": {"shape": [3, 8], "dtype": "float32", "parameter": True},
                                              "count": {"shape": [2], "dtype": "int64", "parameter": False}}}
    torch.manual_seed(0)
    model = MultimodalModel(_config("cross_attention-swin", strategy_state=spec))
    with torch.no_grad():
        model.strategy_state.head.weight.fill_(0.5)
        model.strategy_state.count.fill_(4)
    index = [k for k in model.state_dict() if k.endswith("relative_position_index")]
    assert index
    path, saved, dropped = _save(tmp_path, model, drop=lambda k: k in index or k.startswith("strategy_state."))
    garbage(float("nan"))
    loaded = _load(path, seed=0)
    state = loaded.state_dict()
    for k in index:  # Swin's relative position index, computed by the model: as saved
        assert torch.equal(state[k], saved[k]), k
    assert torch.equal(state["strategy_state.head.weight"], torch.zeros(3, 8))
    assert torch.equal(state["strategy_state.count"], torch.zeros(2, dtype=torch.long))


def test_evaluate_refuses_a_checkpoint_without_its_head(tmp_path):
    from arl_hf.scripts.evaluate import EvalArguments, evaluate_checkpoint

    torch.manual_seed(0)
    path, _, _ = _save(tmp_path, MultimodalModel(_config("cnn")), drop=lambda k: k.startswith("fusion.fc"))
    with pytest.raises(ValueError, match=r"model_name_or_path: checkpoint .*\(missing \['fusion.fc.bias', "
                                         r"'fusion.fc.weight'\].*freshly initialised"):
        evaluate_checkpoint(EvalArguments(model_name_or_path=path, dataset="unused"))
