"""ARL statistics and coefficients against the paper's worked example and an
independent float64 NumPy implementation written here (not imported from the package)."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arl_hf.strategies.arl import (
    ARLStatistics,
    arl_coefficients,
    arl_statistics,
    coefficients_from_statistics,
    modality_shares,
)

LA = [[2.0, 0.5, -1.0], [0.1, 0.3, 0.2]]
LV = [[0.5, 0.4, 0.3], [-1.0, 2.5, 0.0]]
Y = [0, 1]


# ---------------------------------------------------------------- independent reference
def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _softmax_vec(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def ref_paper(logits, y, T):
    """Eq. 4, 17, 18 for M = 2, literally."""
    p0, p1 = _softmax(np.asarray(logits[0])), _softmax(np.asarray(logits[1]))
    q0 = 1.0 / np.mean((p0 * np.log(p0)).sum(1))
    q1 = 1.0 / np.mean((p1 * np.log(p1)).sum(1))
    idx = np.arange(len(y))
    d0, d1 = p0[idx, y].mean(), p1[idx, y].mean()
    return _softmax_vec(np.array([T * q0 / q1, T * d0 / d1]))


def ref_official(logits, T):
    """The authors' code (arl-official-code.md), M = 2."""
    la, lv = np.asarray(logits[0]), np.asarray(logits[1])
    pa, pv = _softmax(la), _softmax(lv)
    ha = np.mean(-(pa * np.log(pa + 1e-16)).sum(1))
    hv = np.mean(-(pv * np.log(pv + 1e-16)).sum(1))
    na, nv = max(ha / (ha + hv), 0.3), max(hv / (ha + hv), 0.3)
    qa = (1 / na) / (1 / na + 1 / nv)
    qv = 1 - qa
    ca, cv = np.abs(la).mean(0).sum(), np.abs(lv).mean(0).sum()
    da = ca / (ca + cv)
    dv = 1 - da
    return _softmax_vec(T * np.array([dv * qa, da * qv]))


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


# ---------------------------------------------------------------- worked example
@pytest.mark.parametrize(
    "variant,T,expected",
    [
        ("paper", 1.0, [0.488089, 0.511911]),
        ("official", 1.0, [0.499312, 0.500688]),
        ("paper", 4.0, [0.452489, 0.547511]),
        ("official", 4.0, [0.497248, 0.502752]),
    ],
)
def test_worked_example_pinned(variant, T, expected):
    a = arl_coefficients([t64(LA), t64(LV)], torch.tensor(Y), T, variant)
    assert a.shape == (2,)
    np.testing.assert_allclose(a.numpy(), expected, atol=1e-6)
    assert abs(float(a.sum()) - 1.0) < 1e-12


def test_worked_example_matches_reference():
    for T in (1.0, 4.0):
        np.testing.assert_allclose(ref_paper([LA, LV], Y, T),
                                   arl_coefficients([t64(LA), t64(LV)], torch.tensor(Y), T).numpy(), atol=1e-12)
        np.testing.assert_allclose(
            ref_official([LA, LV], T), arl_coefficients([t64(LA), t64(LV)], None, T, "official").numpy(), atol=1e-9
        )


@pytest.mark.parametrize("seed", range(5))
def test_random_logits_match_reference_both_variants(seed):
    rng = np.random.default_rng(seed)
    b, c = rng.integers(2, 40), rng.integers(2, 12)
    la, lv = rng.normal(0, 2, (b, c)), rng.normal(0, 2, (b, c))
    y = rng.integers(0, c, b)
    for T in (0.5, 4.0, 8.0):
        got = arl_coefficients([t64(la), t64(lv)], torch.tensor(y), T, "paper").numpy()
        np.testing.assert_allclose(got, ref_paper([la, lv], y, T), atol=1e-6)
        got = arl_coefficients([t64(la), t64(lv)], None, T, "official").numpy()
        np.testing.assert_allclose(got, ref_official([la, lv], T), atol=1e-6)
        # float32 input (the training path) is also within 1e-6 on non-degenerate logits
        logits32 = [torch.tensor(la, dtype=torch.float32), torch.tensor(lv, dtype=torch.float32)]
        got32 = arl_coefficients(logits32, torch.tensor(y), T).numpy()
        np.testing.assert_allclose(got32, ref_paper([la, lv], y, T), atol=2e-5)


def test_paper_variant_depends_on_modality_order_but_official_does_not():
    y = torch.tensor(Y)
    a = arl_coefficients([t64(LA), t64(LV)], y, 4.0, "paper")
    b = arl_coefficients([t64(LV), t64(LA)], y, 4.0, "paper")
    # Eq. 18 is not symmetric: swapping the modalities does not swap the coefficients
    assert not torch.allclose(a, b.flip(0), atol=1e-3)
    a = arl_coefficients([t64(LA), t64(LV)], y, 4.0, "official")
    b = arl_coefficients([t64(LV), t64(LA)], y, 4.0, "official")
    torch.testing.assert_close(a, b.flip(0))


def test_statistics_are_sums_so_sharded_batches_reduce_exactly():
    rng = np.random.default_rng(7)
    la, lv = t64(rng.normal(size=(10, 4))), t64(rng.normal(size=(10, 4)))
    y = torch.tensor(rng.integers(0, 4, 10))
    for variant in ("paper", "official"):
        whole = arl_statistics([la, lv], y, variant)
        s1 = arl_statistics([la[:3], lv[:3]], y[:3], variant)
        s2 = arl_statistics([la[3:], lv[3:]], y[3:], variant)
        summed = ARLStatistics.unflatten(s1.flatten() + s2.flatten())
        torch.testing.assert_close(
            coefficients_from_statistics(summed, 4.0, variant), coefficients_from_statistics(whole, 4.0, variant)
        )
        assert float(summed.count) == 10


# ---------------------------------------------------------------- M > 2
def _stats_from_means(entropy, dependency):
    entropy, dependency = t64(entropy), t64(dependency)
    return ARLStatistics(-entropy, dependency, torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_more_modalities_order_independent(variant):
    rng = np.random.default_rng(3)
    logits = [t64(rng.normal(0, 1.5, (12, 5))) for _ in range(4)]
    y = torch.tensor(rng.integers(0, 5, 12))
    base = arl_coefficients(logits, y, 4.0, variant)
    assert abs(float(base.sum()) - 1) < 1e-12
    for perm in itertools.permutations(range(4)):
        got = arl_coefficients([logits[i] for i in perm], y, 4.0, variant)
        torch.testing.assert_close(got, base[list(perm)])


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("m", [3, 4, 5])
def test_more_modalities_fixed_point_and_direction(variant, m):
    rng = np.random.default_rng(m)
    entropy = rng.uniform(0.5, 1.5, m)
    kappa = (1 / entropy) / (1 / entropy).sum()
    # fixed point: dependency shares equal inverse-variance shares -> all coefficients equal
    stats = _stats_from_means(entropy, kappa * 0.7)
    delta, kap = modality_shares(stats, variant)
    if variant == "paper":
        torch.testing.assert_close(delta, kap)
    a = coefficients_from_statistics(stats, 4.0, variant)
    if variant == "paper":
        torch.testing.assert_close(a, torch.full((m,), 1.0 / m, dtype=a.dtype))
    # direction: shift dependency away from modality 0 (relied on less than its share)
    dep = kap.numpy().copy()
    dep[0] *= 0.5
    a = coefficients_from_statistics(_stats_from_means(entropy, dep), 4.0, variant)
    assert int(torch.argmax(a)) == 0
    dep = kap.numpy().copy()
    dep[0] *= 2.0
    a = coefficients_from_statistics(_stats_from_means(entropy, dep), 4.0, variant)
    assert int(torch.argmin(a)) == 0


def test_official_fixed_point_all_equal_for_m3():
    # equal entropies and equal dependencies: every share is 1/3 -> coefficients equal
    stats = _stats_from_means([1.0, 1.0, 1.0], [2.0, 2.0, 2.0])
    a = coefficients_from_statistics(stats, 4.0, "official")
    torch.testing.assert_close(a, torch.full((3,), 1 / 3, dtype=a.dtype))
    # and the official M>2 entries keep the M=2 balanced scale T/4: a balanced M=2 also gives 1/2
    a2 = coefficients_from_statistics(_stats_from_means([1.0, 1.0], [2.0, 2.0]), 4.0, "official")
    torch.testing.assert_close(a2, torch.full((2,), 0.5, dtype=a2.dtype))


def test_paper_m2_direction_agrees_with_generalisation():
    rng = np.random.default_rng(11)
    for _ in range(20):
        ent, dep = rng.uniform(0.2, 2, 2), rng.uniform(0.05, 1, 2)
        stats = _stats_from_means(ent, dep)
        a = coefficients_from_statistics(stats, 4.0, "paper")
        delta, kappa = modality_shares(stats, "paper")
        assert (float(a[0] - a[1]) > 0) == (float(kappa[0] / delta[0]) > float(kappa[1] / delta[1]))


# ---------------------------------------------------------------- degenerate inputs: always finite
@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize(
    "la,lv",
    [
        (torch.tensor([[1e4, -1e4, 0.0]]), torch.tensor([[0.0, 0.0, 0.0]])),  # one-hot vs uniform, batch of one
        (torch.zeros(3, 4), torch.zeros(3, 4)),  # both uniform
        (torch.tensor([[1e30, -1e30], [-1e30, 1e30]]), torch.tensor([[3e38, 0.0], [0.0, -3e38]])),  # huge
        (torch.full((2, 3), 50.0), torch.tensor([[80.0, -80.0, 0.0], [0.0, 80.0, -80.0]])),
    ],
)
def test_degenerate_logits_give_finite_coefficients(variant, la, lv):
    y = torch.zeros(la.shape[0], dtype=torch.long)
    a = arl_coefficients([la, lv], y, 8.0, variant)
    assert torch.isfinite(a).all()
    assert abs(float(a.sum()) - 1.0) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_computed_in_at_least_float32(dtype):
    rng = np.random.default_rng(5)
    la, lv = rng.normal(size=(16, 6)), rng.normal(size=(16, 6))
    y = torch.tensor(rng.integers(0, 6, 16))
    lo = [torch.tensor(la).to(dtype), torch.tensor(lv).to(dtype)]
    a = arl_coefficients(lo, y, 4.0)
    assert a.dtype == torch.float64  # statistics accumulate in float64
    ref = arl_coefficients([x.double() for x in lo], y, 4.0)  # same rounded inputs, float64
    np.testing.assert_allclose(a.numpy(), ref.numpy(), atol=1e-6)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(2, 5),
    st.integers(2, 4),
    st.data(),
    st.sampled_from(["paper", "official"]),
    st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
)
def test_property_finite_and_normalised(b, c, m, data, variant, dtype):
    logits = [
        torch.tensor(data.draw(st.lists(st.lists(finite, min_size=c, max_size=c), min_size=b, max_size=b))).to(dtype)
        for _ in range(m)
    ]
    logits = [torch.nan_to_num(x, posinf=1e4, neginf=-1e4) for x in logits]  # half overflow -> large finite
    y = torch.tensor(data.draw(st.lists(st.integers(0, c - 1), min_size=b, max_size=b)))
    T = data.draw(st.floats(0.01, 50))
    a = arl_coefficients(logits, y, T, variant)
    assert a.shape == (m,)
    assert torch.isfinite(a).all() and (a >= 0).all()
    assert abs(float(a.sum()) - 1) < 1e-5
    delta, kappa = modality_shares(arl_statistics(logits, y, variant), variant)
    assert torch.isfinite(delta).all() and torch.isfinite(kappa).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 30), st.integers(2, 8), st.integers(0, 10_000), st.floats(0.1, 10))
def test_property_exact_against_reference(b, c, seed, T):
    rng = np.random.default_rng(seed)
    la, lv = rng.normal(0, 1, (b, c)), rng.normal(0, 1, (b, c))
    y = rng.integers(0, c, b)
    np.testing.assert_allclose(arl_coefficients([t64(la), t64(lv)], torch.tensor(y), T).numpy(),
                               ref_paper([la, lv], y, T), atol=1e-6)
    np.testing.assert_allclose(arl_coefficients([t64(la), t64(lv)], None, T, "official").numpy(),
                               ref_official([la, lv], T), atol=1e-6)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("T", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature(T):
    with pytest.raises(ValueError, match="arl_temperature"):
        arl_coefficients([t64(LA), t64(LV)], torch.tensor(Y), T)


def test_bad_shapes_and_empty_batch():
    with pytest.raises(ValueError, match="empty"):
        arl_statistics([torch.zeros(0, 3), torch.zeros(0, 3)], torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"unimodal_logits\[1\]"):
        arl_statistics([torch.zeros(2, 3), torch.zeros(2, 4)], torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        arl_statistics([t64(LA), t64(LV)], None, "paper")
    with pytest.raises(ValueError, match="arl_variant"):
        arl_statistics([t64(LA), t64(LV)], torch.tensor(Y), "bogus")
    with pytest.raises(ValueError, match="at least 2"):
        arl_statistics([t64(LA)], torch.tensor(Y))
