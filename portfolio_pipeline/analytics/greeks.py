"""Position Greeks from stored snapshot rows: inputs for the pricing kernel, and back to rows.

Conventions
-----------
* **Vol**: the broker's implied vol from ``market_snapshot`` when present, finite and
  > 0 (``vol_source="broker"``); otherwise implied from the position's mark with
  :func:`portfolio_pipeline.quant.pricing.implied_vol` (``"implied"``, the European
  formula of the instrument's model); when no vol reproduces the mark (below intrinsic,
  or expired) the Greeks are taken at vol 0, i.e. the intrinsic/forward value
  (``"intrinsic"``), which keeps them finite.
* **Model**: ``pricing_model`` and ``exercise`` of ``config/instruments.yaml``.  American
  exercise is honoured for BSM (equity/ETF options, Leisen-Reimer tree); futures options
  (Black-76) are valued European -- the early-exercise premium of an option on a future
  is small and the kernel's American method is spot-based.
* **T**: :meth:`Contract.year_fraction` from the session close to settlement: the
  open of the expiry session for AM-settled trading classes, its close for PM.
* **r, q**: ``config/pricing.yaml`` (dated flat rate; per-root dividend yield).
* **Spot**: the underlying's close in ``market_snapshot`` (index or stock); for options
  on futures (``option_underlying: future``) the future: the option quote's
  ``underlying_price`` first, then the future's quote.  Stocks and futures: their mark,
  delta 1 and no other Greeks (``model="linear"``).
* **Scaling**: every per-share Greek is scaled by quantity x multiplier in
  :func:`portfolio_pipeline.domain.greeks.position_greeks` only -- the second-order
  terms (gamma in shares, vanna, volga) go through the same function with ``spot=1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from portfolio_pipeline.config.pricing import PricingConfig
from portfolio_pipeline.domain.errors import UnknownInstrumentError
from portfolio_pipeline.domain.greeks import PositionGreeks, position_greeks
from portfolio_pipeline.domain.instruments import InstrumentTable, SecType
from portfolio_pipeline.domain.numbers import finite_or_none
from portfolio_pipeline.domain.positions import Contract, contract_from_row
from portfolio_pipeline.marketdata.valuation import market_mark
from portfolio_pipeline.quant import pricing
from portfolio_pipeline.quant._typing import BoolArray, Float64Array

SettlementHour = Callable[[date, bool], float]
"""(expiry, am_settled) -> UTC hour of settlement on the expiry date."""

_LINEAR = ("STK", "FUT", "IND")

GREEK_SUM_COLUMNS: tuple[str, ...] = (
    "market_value", "share_delta", "dollar_delta", "gamma_shares", "dollar_gamma_1pct",
    "theta_per_day", "vega_per_point", "vanna_per_point", "volga_per_point", "rho_per_pct",
    "beta_weighted_delta", "beta_weighted_dollar_delta",
)
"""Position-level columns that add up across positions."""


class _Quotes:
    """market_snapshot rows of one session, by (source, instrument_key) and by key."""

    def __init__(self, market: pd.DataFrame) -> None:
        self._by_source: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._by_key: dict[str, Mapping[str, Any]] = {}
        for row in market.to_dict("records"):
            self._by_source[(str(row["source"]), str(row["instrument_key"]))] = row
            self._by_key.setdefault(str(row["instrument_key"]), row)

    def get(self, source: str, key: str) -> Mapping[str, Any] | None:
        return self._by_source.get((source, key)) or self._by_key.get(key)

    def value(self, source: str, key: str, column: str) -> float | None:
        row = self.get(source, key)
        return None if row is None else finite_or_none(row.get(column))


def _spot(
    row: Mapping[str, Any], contract: Contract, instruments: InstrumentTable, quotes: _Quotes
) -> float:
    source, root = str(row["broker"]), contract.underlying
    option_quote_und = quotes.value(source, contract.key, "underlying_price")
    position_und = finite_or_none(row.get("underlying_price"))
    spec = instruments.spec(root)
    if spec.option_underlying == "future" or contract.sec_type == "FOP":
        fut = Contract(root, "FUT", expiry=contract.underlying_expiry or contract.expiry)
        candidates = [option_quote_und, quotes.value(source, fut.key, "mark"), position_und,
                      quotes.value(source, Contract(root, "IND").key, "mark")]
    else:
        und_type: SecType = "IND" if spec.underlying_type in ("index", "volatility_index") else "STK"
        candidates = [quotes.value(source, Contract(root, und_type).key, "mark"),
                      option_quote_und, position_und]
    spot = next((c for c in candidates if c is not None and c > 0), None)
    if spot is None:
        raise ValueError(
            f"position {row['broker']}:{row['account_id']}:{row['position_key']}: no underlying "
            f"price in market_snapshot or the position for session {row['session_date']}"
        )
    return spot


def _settlement_hour(contract: Contract, instruments: InstrumentTable, hour: SettlementHour) -> float:
    assert contract.expiry is not None
    try:
        tc = instruments.trading_class(contract.underlying, contract.trading_class)
        am = tc.settlement_time == "AM"
    except UnknownInstrumentError:
        am = False
    return hour(contract.expiry, am)


@dataclass
class _Inputs:
    """Model inputs of one session's positions, one array entry per position (sorted)."""

    spot: Float64Array
    strike: Float64Array
    t_years: Float64Array
    rate: Float64Array
    div: Float64Array
    vol: Float64Array
    kinds: list[str]
    models: list[str]
    exercises: list[str]
    vol_source: list[str]
    broker: dict[str, Float64Array]
    """The broker's iv, delta, gamma, vega and theta (NaN where it has none)."""

    @property
    def is_option(self) -> BoolArray:
        return np.array([m != "linear" for m in self.models], dtype=bool)


def _inputs(records: list[dict[str, Any]], quotes: _Quotes, *, session: date, as_of: datetime,
            instruments: InstrumentTable, pricing_config: PricingConfig,
            settlement_hour: SettlementHour) -> _Inputs:
    """Spot, strike, time, rate, dividend yield, model and exercise per position; the
    broker's IV as the vol where it has a positive one."""
    n = len(records)
    inp = _Inputs(spot=np.empty(n), strike=np.full(n, np.nan), t_years=np.full(n, np.nan),
                  rate=np.full(n, np.nan), div=np.full(n, np.nan), vol=np.full(n, np.nan),
                  kinds=["C"] * n, models=["linear"] * n, exercises=["none"] * n, vol_source=["none"] * n,
                  broker={k: np.full(n, np.nan) for k in ("iv", "delta", "gamma", "vega", "theta")})
    r_day = pricing_config.rate_on(session)
    for i, row in enumerate(records):
        contract = contract_from_row(row, source="positions_snapshot")
        sec_type = contract.sec_type
        if sec_type in _LINEAR:
            inp.spot[i] = float(row["mark"])
            continue
        root = contract.underlying
        inp.spot[i] = _spot(row, contract, instruments, quotes)
        inp.strike[i] = float(contract.strike or np.nan)
        inp.kinds[i] = contract.right or "C"
        model = instruments.pricing_model(root)
        inp.models[i] = model
        inp.exercises[i] = "american" if (instruments.exercise_style(root) == "american" and model == "bsm") else "european"
        inp.t_years[i] = contract.year_fraction(as_of, settlement_hour_utc=_settlement_hour(contract, instruments, settlement_hour))
        inp.rate[i] = r_day
        inp.div[i] = pricing_config.dividend_yield(root) if model == "bsm" else 0.0
        quote = quotes.get(str(row["broker"]), contract.key)
        if quote is not None:
            for k in inp.broker:
                value = finite_or_none(quote.get(k))
                inp.broker[k][i] = np.nan if value is None else value
        if np.isfinite(inp.broker["iv"][i]) and inp.broker["iv"][i] > 0:
            inp.vol[i] = inp.broker["iv"][i]
            inp.vol_source[i] = "broker"
    return inp


def _imply_missing_vols(inp: _Inputs, marks: Float64Array) -> None:
    """Options without a broker IV: the vol implied from the mark ('implied'), else 0
    ('intrinsic': the mark is at or below intrinsic value)."""
    need_iv = inp.is_option & ~np.isfinite(inp.vol)
    for model in ("bsm", "black76"):
        sel = need_iv & (np.array(inp.models) == model)
        if sel.any():
            iv = np.asarray(pricing.implied_vol(
                marks[sel], [inp.kinds[j] for j in np.flatnonzero(sel)], inp.spot[sel], inp.strike[sel],
                inp.t_years[sel], inp.rate[sel], inp.div[sel], model=model,
            ), dtype=np.float64)
            ok = np.isfinite(iv) & (iv > 0)
            idx = np.flatnonzero(sel)
            inp.vol[idx[ok]] = iv[ok]
            inp.vol[idx[~ok]] = 0.0
            for j, good in zip(idx, ok, strict=True):
                inp.vol_source[j] = "implied" if good else "intrinsic"


_MODEL_OUTPUTS = ("price", "delta", "gamma", "vega", "theta", "rho", "vanna", "volga")


def _model_greeks(inp: _Inputs, marks: Float64Array) -> dict[str, Float64Array]:
    """Model price and Greeks per unit (a linear position: price = mark, delta 1)."""
    n = len(marks)
    is_option = inp.is_option
    out = {k: np.zeros(n) for k in _MODEL_OUTPUTS}
    out["price"][:] = np.nan
    out["delta"][~is_option] = 1.0
    out["price"][~is_option] = marks[~is_option]
    for model in ("bsm", "black76"):
        for exercise in ("european", "american"):
            sel = is_option & (np.array(inp.models) == model) & (np.array(inp.exercises) == exercise)
            if not sel.any():
                continue
            g = pricing.greeks(
                [inp.kinds[j] for j in np.flatnonzero(sel)], inp.spot[sel], inp.strike[sel], inp.t_years[sel],
                inp.rate[sel], inp.div[sel], inp.vol[sel], model=model, exercise=exercise,
            )
            for k in _MODEL_OUTPUTS:
                out[k][sel] = getattr(g, k)
    return out


def _values_at_mark(records: list[dict[str, Any]], quotes: _Quotes, is_option: BoolArray,
                    marks: Float64Array, model_price: Float64Array) -> tuple[Float64Array, list[str]]:
    """Value per share and its source: an option's market mark (bid/ask/last), else its model price."""
    at_mark, value_source = marks.copy(), ["mark"] * len(records)
    for i, r in enumerate(records):
        if is_option[i]:
            q = quotes.get(str(r["broker"]), contract_from_row(r, source="positions_snapshot").key)
            at, source = market_mark(*(q.get(k) for k in ("bid", "ask", "last"))) if q else (None, "model")
            at_mark[i] = at if at is not None else model_price[i]
            value_source[i] = source
    return at_mark, value_source


_DOLLAR_GREEKS = ("share_delta", "dollar_delta", "gamma_shares", "dollar_gamma_1pct", "theta_per_day",
                  "vega_per_point", "vanna_per_point", "volga_per_point", "rho_per_pct", "beta_weighted_delta",
                  "beta_weighted_dollar_delta")


def _row(session: date, r: Mapping[str, Any], i: int, inp: _Inputs, marks: Float64Array, qty: Float64Array,
         mult: Float64Array, beta: Float64Array, reference_price: float, out: Mapping[str, Float64Array],
         pg: PositionGreeks, brk: PositionGreeks, at_mark: Float64Array, value_source: list[str]) -> dict[str, Any]:
    """The position_greeks row of position ``i`` (model, broker and dollar Greeks side by side)."""
    return {
        "session_date": session, "broker": r["broker"], "account_id": r["account_id"],
        "position_key": r["position_key"], "underlying": r["underlying"], "sec_type": r["sec_type"],
        "quantity": qty[i], "multiplier": mult[i], "mark": marks[i], "market_value": float(r["market_value"]),
        "spot": inp.spot[i], "model_price": out["price"][i], "model": inp.models[i],
        "exercise": inp.exercises[i], "time_to_expiry": inp.t_years[i], "rate": inp.rate[i],
        "dividend_yield": inp.div[i], "vol": inp.vol[i], "vol_source": inp.vol_source[i],
        **{k: out[k][i] for k in _MODEL_OUTPUTS[1:]},
        **{f"broker_{k}": inp.broker[k][i] for k in ("iv", "delta", "gamma", "vega", "theta")},
        "broker_share_delta": brk.share_delta[i], "broker_theta_per_day": brk.theta_per_day[i],
        "broker_vega_per_point": brk.vega_per_point[i],
        "beta": beta[i], "reference_price": reference_price,
        **{k: getattr(pg, k)[i] for k in _DOLLAR_GREEKS},
        "value_per_share": at_mark[i], "value_source": value_source[i],
    }


def position_greek_rows(
    positions: pd.DataFrame,
    market: pd.DataFrame,
    *,
    session: date,
    as_of: datetime,
    instruments: InstrumentTable,
    pricing_config: PricingConfig,
    betas: Mapping[str, float],
    reference_price: float,
    settlement_hour: SettlementHour,
) -> list[dict[str, Any]]:
    """Rows of ``position_greeks`` for the positions of one session.

    Parameters
    ----------
    positions, market
        ``positions_snapshot`` and ``market_snapshot`` rows of ``session``.
    as_of
        The session close (aware), from which time to expiry is measured.
    betas
        Beta to the reference index per underlying root (see :mod:`.beta`).
    reference_price
        Reference index close (NaN when unknown: beta-weighted delta in index units is
        then NULL; the dollar figure is still stored).
    settlement_hour
        UTC hour of settlement on an expiry date (AM: the open; PM: the close).
    """
    if positions.empty:
        return []
    quotes = _Quotes(market)
    records = positions.sort_values(["broker", "account_id", "position_key"]).to_dict("records")
    inp = _inputs(records, quotes, session=session, as_of=as_of, instruments=instruments,
                  pricing_config=pricing_config, settlement_hour=settlement_hour)
    marks = np.array([float(r["mark"]) for r in records])
    _imply_missing_vols(inp, marks)
    out = _model_greeks(inp, marks)
    qty = np.array([float(r["quantity"]) for r in records])
    mult = np.array([float(r["multiplier"]) for r in records])
    beta = np.array([float(betas.get(str(r["underlying"]).upper(), 1.0)) for r in records])
    pg = position_greeks(
        delta=out["delta"], gamma=out["gamma"], vega=out["vega"], theta=out["theta"],
        rho=out["rho"], vanna=out["vanna"], volga=out["volga"], quantity=qty, multiplier=mult,
        spot=inp.spot, beta=beta, reference_price=reference_price,
    )
    broker = inp.broker
    brk = position_greeks(
        delta=broker["delta"], gamma=broker["gamma"], vega=broker["vega"], theta=broker["theta"],
        quantity=qty, multiplier=mult, spot=inp.spot,
    )
    at_mark, value_source = _values_at_mark(records, quotes, inp.is_option, marks, out["price"])
    return [_row(session, r, i, inp, marks, qty, mult, beta, reference_price, out, pg, brk, at_mark, value_source)
            for i, r in enumerate(records)]


def portfolio_greek_rows(position_rows: pd.DataFrame, session: date) -> list[dict[str, Any]]:
    """Totals of ``position_greeks`` rows per account, per underlying and in total.

    Keys (broker, account_id, underlying): an account's total is ``(b, a, '*')``, an
    account's underlying ``(b, a, u)``, an underlying across accounts ``('*', '*', u)``
    and the whole book ``('*', '*', '*')``.  A NULL beta-weighted delta (reference price
    unknown) makes its sums NULL.
    """
    if position_rows.empty:
        return []
    frame = position_rows.copy()
    cols = list(GREEK_SUM_COLUMNS)
    rows: list[dict[str, Any]] = []
    levels: list[tuple[list[str], dict[str, str]]] = [
        (["broker", "account_id", "underlying"], {}),
        (["broker", "account_id"], {"underlying": "*"}),
        (["underlying"], {"broker": "*", "account_id": "*"}),
        ([], {"broker": "*", "account_id": "*", "underlying": "*"}),
    ]
    # Each column once as float64 (NULL -> NaN); each group's values are taken in row order
    # into a contiguous array and summed by numpy, as Series.sum does for a float64 group
    # without NaN: the same sums, bit for bit, without a DataFrame per group.
    values = {c: frame[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in cols}
    for keys, fixed in levels:
        if keys:
            grouped = frame.groupby(keys, sort=True)
            # group numbers in iteration (key) order; NaN for a row with a NULL key, which
            # groupby leaves out
            ids = grouped.ngroup().to_numpy(dtype=np.float64, na_value=np.nan)
            kept = np.flatnonzero(~np.isnan(ids))
            order = kept[np.argsort(ids[kept], kind="stable")]  # each group's rows in frame order
            counts = np.bincount(ids[kept].astype(np.int64), minlength=grouped.ngroups)
            ends = np.cumsum(counts)
            groups = [(name, order[end - count : end]) for name, count, end in
                      zip(grouped.size().index, counts, ends, strict=True)]
        else:
            groups = [((), np.arange(len(frame)))]
        for name, index in groups:
            labels = dict(zip(keys, name if isinstance(name, tuple) else (name,), strict=True))
            sums: dict[str, float] = {}
            for c in cols:
                part = values[c][index]
                sums[c] = math.nan if np.isnan(part).any() else float(part.sum())
            rows.append({"session_date": session, **labels, **fixed,
                         "positions": len(index), **sums})
    return rows
