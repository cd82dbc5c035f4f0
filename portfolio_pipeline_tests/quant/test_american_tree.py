"""``lr_tree_nodes`` (in-place, node-major backward induction) against its straightforward
twin: the textbook loop that allocates new arrays at every step, on the same inputs.

The twin below is the implementation the in-place one replaced, kept verbatim as the
reference; every output (American and European values, node deltas and gammas) must be
bit-identical, not merely close.  The accuracy of the tree itself is tested against
independent references in ``test_pricing.py`` / ``test_american_greeks.py``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from portfolio_pipeline.quant.american import (
    TreeNodes,
    _node_delta,
    _node_gamma,
    _peizer_pratt,
    lr_tree,
    lr_tree_nodes,
)

Floats = npt.NDArray[np.float64]


def _textbook_lr_tree_nodes(
    is_call: npt.NDArray[np.bool_],
    s: Floats,
    k: Floats,
    t: Floats,
    r: Floats,
    q: Floats,
    vol: Floats,
    steps: int = 201,
) -> TreeNodes:
    n = steps | 1
    dt = t / n
    sd = vol * np.sqrt(t)
    d1 = (np.log(s / k) + (r - q) * t) / sd + 0.5 * sd
    d2 = d1 - sd
    pu = _peizer_pratt(d2, n)
    pbar = _peizer_pratt(d1, n)
    growth = np.exp((r - q) * dt)
    up = growth * pbar / pu
    dn = (growth - pu * up) / (1.0 - pu)
    disc = np.exp(-r * dt)
    a_up = (disc * pu)[:, None]
    a_dn = (disc * (1.0 - pu))[:, None]
    w = np.where(is_call, 1.0, -1.0)[:, None]
    j = np.arange(n + 1, dtype=np.float64)[None, :]
    ls = np.log(s)[:, None] + j * np.log(up)[:, None] + (n - j) * np.log(dn)[:, None]
    spot = np.exp(ls)
    kk = k[:, None]
    amer = np.maximum(w * (spot - kk), 0.0)
    euro = amer.copy()
    inv_dn = (1.0 / dn)[:, None]
    first: dict[int, tuple[Floats, Floats, Floats]] = {}
    for i in range(n - 1, -1, -1):
        amer = a_up * amer[:, 1 : i + 2] + a_dn * amer[:, : i + 1]
        euro = a_up * euro[:, 1 : i + 2] + a_dn * euro[:, : i + 1]
        spot = spot[:, : i + 1] * inv_dn
        ex = w * (spot - kk)
        np.maximum(amer, ex, out=amer)
        if i in (1, 2):
            first[i] = (amer.copy(), euro.copy(), spot.copy())
    a1, e1, s1 = first[1]
    a2, e2, s2 = first[2]
    return TreeNodes(
        amer[:, 0],
        euro[:, 0],
        _node_delta(a1, s1),
        _node_delta(e1, s1),
        _node_gamma(a2, s2),
        _node_gamma(e2, s2),
    )


def _inputs(
    m: int, seed: int
) -> tuple[npt.NDArray[np.bool_], Floats, Floats, Floats, Floats, Floats, Floats]:
    rng = np.random.default_rng(seed)
    s = rng.uniform(20.0, 400.0, m)
    k = s * rng.choice([0.3, 0.8, 0.97, 1.0, 1.03, 1.2, 2.5], m)  # deep ITM/OTM, ATM
    t = rng.choice([1 / 365, 5 / 365, 0.1, 0.5, 2.0, 5.0], m)
    r = rng.choice([0.0, 0.01, 0.05, 0.12], m)
    q = rng.choice([0.0, 0.02, 0.08], m)
    vol = rng.uniform(0.03, 1.5, m)
    return rng.random(m) < 0.5, s, k, t, r, q, vol


@pytest.mark.parametrize(
    ("m", "steps", "seed"), [(1, 201, 0), (7, 200, 1), (128, 201, 2), (300, 51, 3), (64, 3, 4)]
)
def test_in_place_induction_is_bit_identical_to_the_textbook_loop(
    m: int, steps: int, seed: int
) -> None:
    args = _inputs(m, seed)
    with np.errstate(all="ignore"):  # as its callers run it (degenerate rows give NaN)
        fast = lr_tree_nodes(*args, steps=steps)
        slow = _textbook_lr_tree_nodes(*args, steps=steps)
    assert np.isfinite(fast.american).mean() > 0.9  # the draw is mostly ordinary contracts
    for name, got, want in zip(TreeNodes._fields, fast, slow, strict=True):
        assert got.shape == want.shape == (m,), name
        assert np.array_equal(got, want, equal_nan=True), (name, np.max(np.abs(got - want)))
        assert got.tobytes() == want.tobytes(), name  # signed zeros too
    # the outputs own their memory: no view into the induction's work arrays
    assert all(a.base is None or a.base.size == m for a in fast)


def test_rows_are_independent_of_their_block() -> None:
    args = _inputs(40, 5)
    with np.errstate(all="ignore"):
        whole = lr_tree_nodes(*args)
        for i in (0, 17, 39):
            one = lr_tree_nodes(*(a[i : i + 1] for a in args))
            for got, want in zip(one, whole, strict=True):
                assert got[0].tobytes() == want[i].tobytes()
        values = lr_tree(*args)
        for i in (0, 17, 39):
            one_values = lr_tree(*(a[i : i + 1] for a in args))
            for got, want in zip(one_values, values, strict=True):
                assert got[0].tobytes() == want[i].tobytes()


@pytest.mark.parametrize(
    ("m", "steps", "seed"), [(1, 201, 0), (7, 200, 1), (128, 201, 2), (300, 51, 3), (64, 3, 4), (2000, 101, 6)]
)
def test_values_only_tree_matches_the_full_induction(m: int, steps: int, seed: int) -> None:
    """lr_tree inducts the American tree only and takes the European root in closed form
    (the binomial expectation): the American values are lr_tree_nodes' bit for bit, the
    European ones agree to rounding, NaN where the induction gives NaN."""
    args = _inputs(m, seed)
    with np.errstate(all="ignore"):
        american, european = lr_tree(*args, steps=steps)
        full = lr_tree_nodes(*args, steps=steps)
    assert american.tobytes() == full.american.tobytes()
    assert np.array_equal(np.isnan(european), np.isnan(full.european))
    ok = ~np.isnan(full.european)
    strike = args[2][ok]
    np.testing.assert_allclose(european[ok], full.european[ok], rtol=1e-12, atol=0.0)
    assert np.all(np.abs(european[ok] - full.european[ok]) <= 1e-12 * strike)
    assert np.all(european[ok] >= 0.0)
