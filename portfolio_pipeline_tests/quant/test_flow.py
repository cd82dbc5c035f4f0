"""Options flow metrics against hand computations (closed forms written out here, not the
kernel): GEX, the zero-gamma level, the dealer sign convention, put/call, max pain,
pinning and unusual activity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from portfolio_pipeline.quant import flow

SPOT = 100.0
T30 = 30.0 / 365.0
VOL = 0.20
MULT = 100.0


def _npdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _gamma(S: float, K: float, T: float, vol: float) -> float:
    """BSM gamma with r = q = 0, by hand: n(d1) / (S vol sqrt T)."""
    u = vol * math.sqrt(T)
    d1 = (math.log(S / K) + 0.5 * u * u) / u
    return _npdf(d1) / (S * u)


def _chain(
    rows: list[tuple[str, float, float]], *, T: float = T30, spot: float = SPOT, **kw: object
) -> flow.Chain:
    """rows: (C/P, strike, open interest); one expiry, r = q = 0, vol 20 %."""
    n = len(rows)
    return flow.Chain(
        spot=spot,
        is_call=np.array([r[0] == "C" for r in rows]),
        strike=np.array([r[1] for r in rows]),
        expiry=np.full(n, np.datetime64("2024-02-16")),
        T=np.full(n, T),
        iv=np.full(n, VOL),
        open_interest=np.array([r[2] for r in rows]),
        volume=np.zeros(n),
        multiplier=MULT,
        **kw,  # type: ignore[arg-type]
    )


FOUR = [("P", 90.0, 1000.0), ("P", 95.0, 500.0), ("C", 105.0, 800.0), ("C", 110.0, 300.0)]


def test_gex_per_strike_and_total_match_hand_computation() -> None:
    chain = _chain(FOUR)
    exp = flow.exposures(chain, "customers_sell_calls_buy_puts")
    # dealers long calls (+OI), short puts (-OI); $ per 1 % = gamma x pos x mult x S^2 / 100
    hand = [
        (-1 if cp == "P" else 1) * oi * MULT * _gamma(SPOT, k, T30, VOL) * SPOT**2 / 100.0
        for cp, k, oi in FOUR
    ]
    np.testing.assert_allclose(exp.gex, hand, rtol=1e-10)
    assert exp.total_gex == pytest.approx(sum(hand), rel=1e-10)
    by_strike = flow.gex_by_strike(chain, exp)
    np.testing.assert_array_equal(by_strike.strike, [90.0, 95.0, 105.0, 110.0])
    np.testing.assert_allclose(by_strike.total, hand, rtol=1e-10)
    np.testing.assert_allclose(by_strike.put_gex, [hand[0], hand[1], 0.0, 0.0], rtol=1e-10)
    # one figure by hand to the cent: the 90 put, d1 = (ln(100/90) + 0.02/2 * 30/365 ... )
    u = VOL * math.sqrt(T30)
    d1 = (math.log(100 / 90) + u * u / 2) / u
    assert exp.gex[0] == pytest.approx(-1000 * 100 * _npdf(d1) / (100 * u) * 100, rel=1e-10)


def test_zero_gamma_equal_oi_closed_form() -> None:
    # dealer gamma = OI (n(d1c) - n(d1p)) / (S u) = 0  <=>  d1c = -d1p
    # <=>  S* = sqrt(K1 K2) exp(-u^2 / 2)
    chain = _chain([("P", 95.0, 1000.0), ("C", 105.0, 1000.0)])
    zg = flow.zero_gamma(chain, "customers_sell_calls_buy_puts")
    u2 = VOL * VOL * T30
    expected = math.sqrt(95.0 * 105.0) * math.exp(-u2 / 2)
    assert zg.level == pytest.approx(expected, abs=1e-4)
    assert zg.roots == pytest.approx((expected,), abs=1e-4)
    # below the level the dealers are short gamma, above long
    assert np.all(zg.gex[zg.spots < expected - 0.01] < 0)
    assert np.all(zg.gex[zg.spots > expected + 0.01] > 0)


def test_zero_gamma_unequal_oi_closed_form() -> None:
    # a n(d1c) = b n(d1p)  =>  2 ln S* = ln K1 + ln K2 - u^2 + 2 u^2 ln(b/a) / ln(K1/K2)
    a, b, k1, k2 = 600.0, 1500.0, 105.0, 95.0
    chain = _chain([("P", k2, b), ("C", k1, a), ("C", 120.0, 0.0)])
    u2 = VOL * VOL * T30
    x = (math.log(k1) + math.log(k2) - u2 + 2 * u2 * math.log(b / a) / math.log(k1 / k2)) / 2
    zg = flow.zero_gamma(chain, "customers_sell_calls_buy_puts")
    assert zg.level == pytest.approx(math.exp(x), abs=1e-4)
    # not what a linear extrapolation from spot would give
    exp = flow.exposures(chain, "customers_sell_calls_buy_puts")
    assert exp.total_gex < 0 and zg.level > SPOT


def test_zero_gamma_none_when_dealers_long_everywhere() -> None:
    chain = _chain([("C", 100.0, 1000.0), ("C", 110.0, 10.0)])
    zg = flow.zero_gamma(chain, "customers_sell_calls_buy_puts")
    assert zg.level is None and zg.roots == ()
    assert np.all(zg.gex > 0)


def test_gamma_curve_at_spot_equals_total_gex() -> None:
    chain = _chain(FOUR)
    curve = flow.dealer_gamma_curve(chain, "customers_sell_calls_buy_puts", [SPOT, 90.0])
    assert curve[0] == pytest.approx(
        flow.exposures(chain, "customers_sell_calls_buy_puts").total_gex, rel=1e-12
    )
    # at 90 by hand
    hand90 = sum(
        (-1 if cp == "P" else 1) * oi * MULT * _gamma(90.0, k, T30, VOL) * 90.0**2 / 100
        for cp, k, oi in FOUR
    )
    assert curve[1] == pytest.approx(hand90, rel=1e-10)


def test_sign_convention_customers_long_puts_gives_negative_dealer_gamma_below_spot() -> None:
    puts = _chain([("P", 90.0, 1000.0), ("P", 95.0, 1000.0), ("C", 105.0, 100.0)])
    for mode in ("customers_sell_calls_buy_puts", "customers_buy_calls_buy_puts"):
        exp = flow.exposures(puts, mode)  # type: ignore[arg-type]
        below = puts.strike < SPOT
        assert np.all(exp.position[below] < 0)
        assert np.all(exp.gex[below] < 0)
        curve = flow.dealer_gamma_curve(puts, mode, [85.0, 90.0, 95.0])  # type: ignore[arg-type]
        assert np.all(curve < 0)
    # the default makes dealers long the calls customers sold; the other mode short them
    calls = puts.is_call
    assert np.all(flow.exposures(puts, "customers_sell_calls_buy_puts").gex[calls] > 0)
    assert np.all(flow.exposures(puts, "customers_buy_calls_buy_puts").gex[calls] < 0)


def test_net_customer_uses_trade_side_volumes() -> None:
    buy = np.array([300.0, 0.0, 50.0])
    sell = np.array([100.0, 0.0, 250.0])
    chain = _chain(
        [("P", 95.0, 1000.0), ("P", 90.0, 10.0), ("C", 105.0, 1000.0)],
        customer_buy=buy,
        customer_sell=sell,
    )
    pos = flow.dealer_position(chain, "net_customer")
    np.testing.assert_array_equal(pos, [-200.0, 0.0, 200.0])
    exp = flow.exposures(chain, "net_customer")
    assert exp.gex[0] < 0 < exp.gex[2]
    with pytest.raises(ValueError, match="net_customer"):
        flow.dealer_position(_chain(FOUR), "net_customer")


def test_vanna_and_charm_exposure_per_expiry_by_hand() -> None:
    r = q = 0.0
    chain = _chain([("C", 105.0, 100.0)])
    exp = flow.exposure_by_expiry(chain, flow.exposures(chain, "customers_sell_calls_buy_puts"))
    assert len(exp) == 1
    u = VOL * math.sqrt(T30)
    d1 = (math.log(SPOT / 105.0) + (r - q + VOL * VOL / 2) * T30) / u
    d2 = d1 - u
    vanna = -_npdf(d1) * d2 / VOL / 100.0  # delta per vol point
    charm = -(-_npdf(d1) * d2 / (2 * T30)) / 365.0  # delta change as one day passes (r = q = 0)
    assert exp[0].vanna == pytest.approx(vanna * 100 * MULT * SPOT, rel=1e-9)
    assert exp[0].charm == pytest.approx(charm * 100 * MULT * SPOT, rel=1e-9)
    # OTM call: vanna > 0, and its delta decays as time passes
    assert exp[0].vanna > 0 and exp[0].charm < 0


def test_put_call_ratios_by_bucket_by_hand() -> None:
    days = [3, 3, 20, 20, 60, 200]
    chain = flow.Chain(
        spot=SPOT,
        is_call=np.array([False, True, False, True, False, True]),
        strike=np.full(6, 100.0),
        expiry=np.array(
            ["2024-01-05", "2024-01-05", "2024-01-22", "2024-01-22", "2024-03-01", "2024-07-19"],
            "datetime64[D]",
        ),
        T=np.array(days) / 365.0,
        iv=np.full(6, VOL),
        open_interest=np.array([400.0, 200.0, 90.0, 30.0, 10.0, 50.0]),
        volume=np.array([150.0, 100.0, 0.0, 0.0, 5.0, 0.0]),
        multiplier=MULT,
    )
    rows = {r.bucket: r for r in flow.put_call_ratios(chain, (7, 30, 90))}
    assert list(rows) == ["0-7d", "7-30d", "30-90d", ">90d", "all"]
    assert rows["0-7d"].volume_ratio == pytest.approx(1.5)
    assert rows["0-7d"].oi_ratio == pytest.approx(2.0)
    assert rows["7-30d"].volume_ratio is None and rows["7-30d"].oi_ratio == pytest.approx(3.0)
    assert rows["30-90d"].oi_ratio is None  # no calls
    assert rows[">90d"].put_oi == 0 and rows[">90d"].oi_ratio == 0.0
    assert rows["all"].volume_ratio == pytest.approx(155.0 / 100.0)
    assert rows["all"].oi_ratio == pytest.approx(500.0 / 280.0)


def test_max_pain_by_hand() -> None:
    # calls OI {90: 5, 100: 10, 110: 20}, puts OI {90: 30, 100: 5, 110: 2}
    # P=90: puts 100: 5x10 + 110: 2x20 = 90; P=100: call 90: 5x10 + put 110: 2x10 = 70;
    # P=110: calls 90: 5x20 + 100: 10x10 = 200
    k = [90, 100, 110, 90, 100, 110]
    c = [True, True, True, False, False, False]
    oi = [5, 10, 20, 30, 5, 2]
    mp, cands, payout = flow.max_pain(k, c, oi)
    assert mp == 100.0
    np.testing.assert_array_equal(cands, [90, 100, 110])
    np.testing.assert_allclose(payout, [90, 70, 200])


def test_pinning_next_expiry_top_oi_and_distance() -> None:
    chain = flow.Chain(
        spot=100.0,
        is_call=np.array([True, False, True, False, True]),
        strike=np.array([100.0, 100.0, 105.0, 95.0, 100.0]),
        expiry=np.array(
            ["2024-01-05", "2024-01-05", "2024-01-05", "2024-01-05", "2024-01-19"], "datetime64[D]"
        ),
        T=np.array([2, 2, 2, 2, 16]) / 365.0,
        iv=np.full(5, VOL),
        open_interest=np.array([300.0, 400.0, 500.0, 100.0, 9999.0]),
        volume=np.zeros(5),
        multiplier=MULT,
    )
    pin = flow.pinning(chain, top=2)
    assert pin is not None
    assert pin.expiry == np.datetime64("2024-01-05")
    np.testing.assert_array_equal(pin.strikes, [100.0, 105.0])
    np.testing.assert_array_equal(pin.open_interest, [700.0, 500.0])
    np.testing.assert_allclose(pin.distance, [0.0, 0.05])
    # payout at 95: puts 100: 400x5 = 2000; at 100: call 0, put 95: 0 -> 0 ... max pain 100
    assert pin.max_pain == 100.0 and pin.max_pain_distance == 0.0


def test_unusual_activity_reasons() -> None:
    chain = flow.Chain(
        spot=100.0,
        is_call=np.array([True, True, False, False, True]),
        strike=np.array([100.0, 100.0, 85.0, 99.0, 120.0]),
        expiry=np.full(5, np.datetime64("2024-01-19")),
        T=np.full(5, T30),
        iv=np.full(5, VOL),
        open_interest=np.array([100.0, 5000.0, 5000.0, 0.0, 5000.0]),
        volume=np.array([150.0, 600.0, 200.0, 120.0, 50.0]),
        multiplier=MULT,
    )
    avg = np.array([np.nan, 100.0, 150.0, 0.0, 1.0])
    out = flow.unusual_activity(
        chain,
        avg,
        flow.FlowThresholds(min_volume=100, volume_oi_ratio=1.0, size_multiple=5, far_otm=0.10),
    )
    got = {int(i): out.reason_names(j) for j, i in enumerate(out.index)}
    assert got == {
        0: ["volume_over_oi"],
        1: ["volume_over_average"],
        2: ["far_otm_size"],
        3: ["volume_over_oi"],
    }  # row 4: far OTM and 50x its average, but below min_volume


def test_bad_chain_names_the_field() -> None:
    with pytest.raises(ValueError, match="open_interest"):
        _chain([("C", 100.0, -1.0)])
    with pytest.raises(ValueError, match="strike has 1 rows, expected 2"):
        flow.Chain(
            spot=100.0,
            is_call=np.array([True, False]),
            strike=np.array([100.0]),
            expiry=np.full(2, np.datetime64("2024-01-19")),
            T=np.full(2, T30),
            iv=np.full(2, VOL),
            open_interest=np.zeros(2),
            volume=np.zeros(2),
            multiplier=MULT,
        )
