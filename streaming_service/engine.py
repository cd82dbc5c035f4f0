"""Incremental portfolio Greeks: reprice only what a tick touches.

The book is split by underlying root into :class:`_Group` s of aligned numpy arrays.
A tick on an underlying reprices that group only (one vectorised
``quant.pricing.greeks`` call); a VIX tick rescales every option's vol
(``vol = vol_at_open * VIX / VIX_at_open``, a sticky-VIX intraday model) and so
reprices every option group; a VIX3M tick changes only the regime.  Per-group sums are
cached, so the portfolio totals are a sum over five-or-so groups.  Quantity x
multiplier scaling happens in ``domain.greeks.position_greeks`` (the one place).

Every evaluation classifies the live VIX and VIX/VIX3M with the one
:class:`~portfolio_pipeline.domain.regime.RegimeService` (the previous regime passed
only for its hysteresis) and evaluates the limits with
``domain.limits.evaluate_limits``.  Maintenance margin is held at the broker's last
reported value (an intraday margin model is out of scope).

``Engine(..., incremental=False)`` is the plain reference twin: it reprices the whole
book on every tick; a test asserts both give the same numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Final

import numpy as np
import numpy.typing as npt

from portfolio_pipeline.domain.greeks import position_greeks
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.limits import LimitCheck, RiskSnapshot, evaluate_limits
from portfolio_pipeline.domain.positions import AccountSnapshot, Position, Quote
from portfolio_pipeline.domain.regime import RegimeService, RegimeState
from portfolio_pipeline.quant import pricing
from portfolio_pipeline.quant._typing import Model

__all__ = [
    "VOL_INDEX",
    "VOL_INDEX_3M",
    "BadTickError",
    "Engine",
    "EngineInputs",
    "NonFiniteGreeksError",
    "RiskState",
    "Tick",
    "UnknownContractError",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

VOL_INDEX: Final = "VIX"
VOL_INDEX_3M: Final = "VIX3M"
_YEAR_SECONDS: Final = 365.0 * 86400.0
_SETTLE_UTC: Final = {"AM": time(14, 30), "PM": time(21, 0)}
_N_TOTALS: Final = 5  # bw dollar delta, dollar gamma 1%, vega, theta, value change


class BadTickError(ValueError):
    """A tick that cannot be used (non-finite or non-positive price, naive timestamp)."""


class UnknownContractError(KeyError):
    """A tick for a symbol the engine does not follow."""


class NonFiniteGreeksError(ArithmeticError):
    """Repricing produced NaN/inf Greeks; the group keeps its last good values."""

    def __init__(self, root: str, count: int) -> None:
        super().__init__(f"{count} non-finite Greek(s) repricing {root}")
        self.root = root
        self.count = count


@dataclass(frozen=True, slots=True)
class Tick:
    """One price update of an underlying (or VIX / VIX3M level); values as received."""

    symbol: str
    ts: datetime
    price: float


@dataclass(frozen=True, slots=True)
class RiskState:
    """Portfolio risk after a tick: what the breach detector evaluates."""

    ts: datetime
    risk: RiskSnapshot
    regime: RegimeState
    checks: tuple[LimitCheck, ...]
    spots: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class EngineInputs:
    """What the engine starts from: the book at the last close and the market then."""

    account: AccountSnapshot
    positions: Sequence[Position]
    quotes: Sequence[Quote]
    vix: float
    vix3m: float | None
    rate: float = 0.0
    dividend_yields: Mapping[str, float] = field(default_factory=dict)
    betas: Mapping[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Group:
    root: str
    keys: tuple[str, ...]
    is_option: npt.NDArray[np.bool_]
    is_call: npt.NDArray[np.bool_]
    strike: FloatArray
    settle_epoch: FloatArray
    units: FloatArray  # signed quantity (multiplier applied in position_greeks)
    multiplier: FloatArray
    vol0: FloatArray
    value0: FloatArray  # mark per share at the start
    model: Model
    q: float
    beta: float
    totals: FloatArray = field(default_factory=lambda: np.zeros(_N_TOTALS))
    opt_idx: npt.NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, dtype=np.intp))


def _settle_epoch(expiry: date, settlement: str) -> float:
    return datetime.combine(expiry, _SETTLE_UTC.get(settlement, _SETTLE_UTC["PM"]), tzinfo=UTC).timestamp()


class Engine:
    """Portfolio Greeks, regime and limit checks, updated tick by tick.

    Parameters
    ----------
    inputs:
        Positions, account and quotes at the start (see :class:`EngineInputs`).
    instruments:
        THE instrument table (model, settlement time per trading class).
    regimes:
        THE regime service.
    scope:
        Name of the book in limit checks (the account id, or ``"*"``).
    incremental:
        False = reprice everything on every tick (reference twin / benchmark baseline).
    """

    def __init__(
        self,
        inputs: EngineInputs,
        instruments: InstrumentTable,
        regimes: RegimeService,
        *,
        scope: str | None = None,
        incremental: bool = True,
    ) -> None:
        if not math.isfinite(inputs.vix) or inputs.vix <= 0:
            raise BadTickError(f"engine: starting VIX must be positive and finite, got {inputs.vix!r}")
        self._regimes = regimes
        self._incremental = incremental
        self._scope = scope or inputs.account.account_id
        self._nlv0 = float(inputs.account.nlv)
        self._margin = float(inputs.account.maint_margin)
        self._rate = float(inputs.rate)
        self._vix0 = float(inputs.vix)
        self._vix = float(inputs.vix)
        self._vix3m = None if inputs.vix3m is None else float(inputs.vix3m)
        self._regime_name: str | None = None
        self._last_ts: datetime = inputs.account.as_of
        quotes = {q.contract.key: q for q in inputs.quotes}
        self._spot: dict[str, float] = {}
        self._groups: dict[str, _Group] = {}
        by_root: dict[str, list[Position]] = {}
        for p in inputs.positions:
            by_root.setdefault(p.contract.underlying.upper(), []).append(p)
        for root, positions in by_root.items():
            self._groups[root] = self._build_group(root, positions, quotes, instruments, inputs)
        self._bad: set[str] = set()
        for root in self._groups:
            self._reprice(root, self._last_ts)

    # ------------------------------------------------------------------ set-up

    def _build_group(
        self,
        root: str,
        positions: Sequence[Position],
        quotes: Mapping[str, Quote],
        instruments: InstrumentTable,
        inputs: EngineInputs,
    ) -> _Group:
        spot = next((p.underlying_price for p in positions if p.underlying_price), None)
        if spot is None:
            spot = next((p.mark for p in positions if not p.contract.is_option), None)
        if spot is None or not math.isfinite(spot) or spot <= 0:
            raise BadTickError(f"engine: no underlying price for {root} in the starting book")
        self._spot[root] = float(spot)
        spec = instruments.spec(root)
        model: Model = spec.options.model if spec.options is not None else "bsm"
        n = len(positions)
        is_option = np.array([p.contract.is_option for p in positions], dtype=bool)
        is_call = np.array([p.contract.right == "C" for p in positions], dtype=bool)
        strike = np.array([p.contract.strike or 0.0 for p in positions], dtype=np.float64)
        settle = np.zeros(n)
        vol0 = np.zeros(n)
        q = float(inputs.dividend_yields.get(root, 0.0))
        for i, p in enumerate(positions):
            c = p.contract
            if not c.is_option:
                continue
            assert c.expiry is not None
            tc = instruments.trading_class(root, c.trading_class)
            settle[i] = _settle_epoch(c.expiry, tc.settlement_time)
            quote = quotes.get(c.key)
            iv = quote.iv if quote is not None and quote.iv is not None else None
            if iv is None or not math.isfinite(iv) or iv <= 0:
                t = max(settle[i] - p.as_of.timestamp(), 0.0) / _YEAR_SECONDS
                solved = pricing.implied_vol(
                    p.mark, "C" if c.right == "C" else "P", spot, float(c.strike or 0.0), t, self._rate, q, model
                )
                iv = float(np.asarray(solved).reshape(-1)[0])
            if not math.isfinite(iv) or iv <= 0:
                iv = self._vix0 / 100.0
                logger.warning("engine: no usable vol for %s; using VIX/100=%s", c.key, iv)
            vol0[i] = iv
        group = _Group(
            root=root,
            keys=tuple(p.contract.key for p in positions),
            is_option=is_option,
            is_call=is_call,
            strike=strike,
            settle_epoch=settle,
            units=np.array([p.quantity for p in positions], dtype=np.float64),
            multiplier=np.array([p.multiplier for p in positions], dtype=np.float64),
            vol0=vol0,
            value0=np.array([p.mark for p in positions], dtype=np.float64),
            model=model,
            q=q,
            beta=float(inputs.betas.get(root, 1.0)),
        )
        group.opt_idx = np.flatnonzero(is_option)
        return group

    # ------------------------------------------------------------------ queries

    @property
    def roots(self) -> tuple[str, ...]:
        return tuple(self._groups)

    @property
    def symbols(self) -> frozenset[str]:
        """Every symbol the engine accepts ticks for."""
        return frozenset((*self._groups, VOL_INDEX, VOL_INDEX_3M))

    @property
    def vix(self) -> float:
        return self._vix

    @property
    def vix3m(self) -> float | None:
        return self._vix3m

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def position_count(self) -> int:
        return sum(len(g.keys) for g in self._groups.values())

    def spot(self, root: str) -> float:
        try:
            return self._spot[root.upper()]
        except KeyError:
            raise UnknownContractError(root) from None

    def atm_vol(self, root: str) -> float:
        """A representative vol for new contracts on ``root`` (median position vol, VIX-scaled)."""
        g = self._groups.get(root.upper())
        scale = self._vix / self._vix0
        if g is None or g.opt_idx.size == 0:
            return self._vix / 100.0
        return float(np.median(g.vol0[g.opt_idx])) * scale

    def dividend_yield(self, root: str) -> float:
        g = self._groups.get(root.upper())
        return 0.0 if g is None else g.q

    def beta(self, root: str) -> float:
        g = self._groups.get(root.upper())
        return 1.0 if g is None else g.beta

    @property
    def bad_groups(self) -> frozenset[str]:
        """Groups whose last repricing gave non-finite Greeks (their last good values stand)."""
        return frozenset(self._bad)

    # ------------------------------------------------------------------ updates

    def _reprice(self, root: str, ts: datetime) -> None:
        g = self._groups[root]
        s = self._spot[root]
        n = g.units.size
        delta = np.where(g.is_option, 0.0, 1.0)
        gamma = np.zeros(n)
        vega = np.zeros(n)
        theta = np.zeros(n)
        value = np.full(n, s)
        if g.opt_idx.size:
            idx = g.opt_idx
            t = np.maximum(g.settle_epoch[idx] - ts.timestamp(), 0.0) / _YEAR_SECONDS
            vol = g.vol0[idx] * (self._vix / self._vix0)
            res = pricing.greeks(g.is_call[idx], s, g.strike[idx], t, self._rate, g.q, vol, g.model)
            delta[idx] = res.delta
            gamma[idx] = res.gamma
            vega[idx] = res.vega
            theta[idx] = res.theta
            value[idx] = res.price
        pg = position_greeks(
            delta=delta, gamma=gamma, vega=vega, theta=theta,
            quantity=g.units, multiplier=g.multiplier, spot=s, beta=g.beta,
        )
        pnl = (value - g.value0) * g.units * g.multiplier
        totals = np.array([
            pg.beta_weighted_dollar_delta.sum(),
            pg.dollar_gamma_1pct.sum(),
            pg.vega_per_point.sum(),
            pg.theta_per_day.sum(),
            pnl.sum(),
        ])
        bad = int((~np.isfinite(totals)).sum())
        if bad:
            self._bad.add(root)
            raise NonFiniteGreeksError(root, bad)
        self._bad.discard(root)
        g.totals = totals

    def _apply(self, tick: Tick) -> set[str]:
        """Validate and apply one tick; the groups it touches."""
        symbol = tick.symbol.upper() if isinstance(tick.symbol, str) else ""
        if symbol not in self.symbols:
            raise UnknownContractError(f"no position or index {tick.symbol!r} in the book")
        ts = tick.ts
        if not isinstance(ts, datetime) or ts.tzinfo is None or ts.utcoffset() is None:
            raise BadTickError(f"tick {symbol}: timestamp must be an aware datetime, got {ts!r}")
        try:
            price = float(tick.price)
        except (TypeError, ValueError):
            raise BadTickError(f"tick {symbol}: price is not a number: {tick.price!r}") from None
        if not math.isfinite(price) or price <= 0:
            raise BadTickError(f"tick {symbol}: price must be positive and finite, got {price!r}")
        if ts > self._last_ts:
            self._last_ts = ts
        if symbol == VOL_INDEX:
            self._vix = price
            return {r for r, g in self._groups.items() if g.opt_idx.size}
        if symbol == VOL_INDEX_3M:
            self._vix3m = price
            return set()
        self._spot[symbol] = price
        return {symbol}

    def on_ticks(self, ticks: Iterable[Tick]) -> RiskState:
        """Apply ticks (bad ones raise before anything changes for that tick) and re-evaluate.

        Raises :class:`BadTickError` / :class:`UnknownContractError` for the first bad
        tick of a one-tick call; with several ticks, use :meth:`on_tick` per tick to
        isolate them.  Raises :class:`NonFiniteGreeksError` when a group's repricing is
        non-finite (its last good totals stay in force; the state is still evaluated
        by the next call).
        """
        touched: set[str] = set()
        for tick in ticks:
            touched |= self._apply(tick)
        if not self._incremental:
            touched = set(self._groups)
        errors: list[NonFiniteGreeksError] = []
        for root in touched:
            try:
                self._reprice(root, self._last_ts)
            except NonFiniteGreeksError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return self.evaluate()

    def on_tick(self, tick: Tick) -> RiskState:
        return self.on_ticks((tick,))

    def risk_snapshot(self) -> RiskSnapshot:
        totals = np.zeros(_N_TOTALS)
        for g in self._groups.values():
            totals += g.totals
        return RiskSnapshot(
            scope=self._scope,
            nlv=self._nlv0 + float(totals[4]),
            beta_weighted_dollar_delta=float(totals[0]),
            dollar_gamma_1pct=float(totals[1]),
            vega_per_point=float(totals[2]),
            theta_per_day=float(totals[3]),
            maint_margin=self._margin,
        )

    def evaluate(self) -> RiskState:
        """Regime from the live VIX / VIX3M and every limit check, at the last tick."""
        regime = self._regimes.classify(self._vix, self._vix3m, previous=self._regime_name)
        self._regime_name = regime.name
        risk = self.risk_snapshot()
        return RiskState(
            ts=self._last_ts,
            risk=risk,
            regime=regime,
            checks=tuple(evaluate_limits(risk, regime)),
            spots=self._spot,
        )
