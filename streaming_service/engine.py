"""Incremental portfolio Greeks: reprice only what the ticks of a batch touch.

The book is held as one set of pre-allocated, aligned numpy arrays (one row per
position), ordered by underlying root so each :class:`_Group` is a contiguous slice
(its attributes are views into the book arrays).  Applying a tick
(:meth:`Engine.apply`) only validates it and marks what it dirties: a tick on an
underlying dirties that group; a VIX tick rescales every option's vol
(``vol = vol_at_open * VIX / VIX_at_open``, a sticky-VIX intraday model) and so dirties
every option group -- lazily: the book is repriced once, when the batch is refreshed,
however many VIX ticks the batch held; a VIX3M tick changes only the regime.

:meth:`Engine.reprice_pending` then reprices the option rows of every dirty group in
ONE vectorised ``quant.pricing.greeks`` call per pricing model (the call has a fixed
cost of ~100 us, so a batch touching five underlyings costs about what one does), and
aggregates every row into per-group sums with a single (5 x rows) @ (rows x groups)
product -- no Python loop over positions.  The portfolio totals are the sum of the
cached per-group sums.  Quantity x multiplier scaling happens in
``domain.greeks.position_greeks`` (the one place).

Every evaluation classifies the live VIX and VIX/VIX3M with the one
:class:`~portfolio_pipeline.domain.regime.RegimeService` (the previous regime passed
only for its hysteresis) and evaluates the limits with
``domain.limits.evaluate_limits``.  Maintenance margin is held at the broker's last
reported value (an intraday margin model is out of scope).

Expansion (``Engine(..., expansion=Expansion(...))``, what the streaming service runs):
between exact revaluations a group's five totals come from a quadratic in spot and
vol fitted on a 3 x 3 grid of exact revaluations around the last one (spot
``S_a * (1 + {-h, 0, h})``, vol scale ``x_a * (1 + {-k, 0, k})``; biquadratic Lagrange
interpolation, the cross term included; plus theta x elapsed days on the P&L).  The
grid comes from ONE pricing call over 9 x rows, built when a group is repriced after two
moves in a row inside the grid's range (a calm market); a tick whose group has moved more than
``h`` in spot or ``k`` in vol from the grid's centre, or more than ``max_age_seconds``
of market time since, is repriced exactly (and without a grid while the market jumps,
so a jumpy tape costs what the exact incremental engine costs).  Stated bound: within
those ranges the interpolated utilisations are within ``guard / 2`` of full
revaluation (tested against the twin); the engine checks it on itself -- whenever an
interpolated group is repriced exactly, the error is measured and a group over the
bound gets half the range (logged).  Breach decisions never rest on the estimate: when
any utilisation lies within ``guard`` of a decision level (``levels``: 1.0, and
``1 - hysteresis`` where a breach clears), the whole book is repriced exactly at the
batch's instant before the checks are returned (untouched groups included, which
otherwise stay at the time of their last tick), so the breach detector sees what full
revaluation gives at every decision boundary.  Other numbers (risk snapshots, event
payloads away from a boundary) carry the interpolation error, within the bound.

``Engine(..., incremental=False)`` is the plain reference twin: it reprices the whole
book on every call; a test asserts both give the same numbers.

Batches: :meth:`Engine.on_ticks` (or :meth:`Engine.apply` per tick, then
:meth:`Engine.reprice_pending` and :meth:`Engine.evaluate`) applies any number of ticks
and reprices/evaluates once; the streaming service feeds it micro-batches of the ticks
that queued up while the previous batch was processed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from portfolio_pipeline.domain.greeks import position_greeks
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.limits import LimitCheck, RiskSnapshot, evaluate_limits
from portfolio_pipeline.domain.positions import AccountSnapshot, Position, Quote
from portfolio_pipeline.domain.regime import LimitSet, RegimeService, RegimeState
from portfolio_pipeline.domain.settlement import SessionHours, settlement_instant
from portfolio_pipeline.domain.symbols import VIX, VIX3M
from portfolio_pipeline.marketdata.valuation import market_mark
from portfolio_pipeline.quant import pricing
from portfolio_pipeline.quant._typing import Model

__all__ = [
    "VOL_INDEX",
    "VOL_INDEX_3M",
    "BadTickError",
    "Engine",
    "EngineInputs",
    "Expansion",
    "NonFiniteGreeksError",
    "RiskState",
    "Tick",
    "UnknownContractError",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]

VOL_INDEX: Final = VIX
VOL_INDEX_3M: Final = VIX3M
_YEAR_SECONDS: Final = 365.0 * 86400.0
_N_TOTALS: Final = 5  # bw dollar delta, dollar gamma 1%, vega, theta, value change


#: grid offsets (spot, vol) of the 9 expansion points, spot-major; index 4 is the centre
_DU: Final = np.repeat(np.array([-1.0, 0.0, 1.0]), 3)
_DV: Final = np.tile(np.array([-1.0, 0.0, 1.0]), 3)


@dataclass(frozen=True, slots=True)
class Expansion:
    """Interpolated revaluation between exact ones (see the module docstring).

    ``spot_step`` / ``vol_step``: half-width of the grid as a fraction of spot / of the
    VIX level; ``max_age_seconds``: market seconds a grid is used for; ``guard``:
    utilisation band around each of ``levels`` inside which the totals are made exact
    (the stated error bound is ``guard / 2``).
    """

    spot_step: float = 0.002
    vol_step: float = 0.02
    max_age_seconds: float = 30.0
    guard: float = 0.02
    levels: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        for name in ("spot_step", "vol_step", "max_age_seconds", "guard"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"engine expansion: {name} must be positive and finite, got {value!r}")


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
    """One price update of an underlying (or VIX / VIX3M level); values as received.

    ``received`` is the ``time.perf_counter()`` at which the tick came off the wire, when
    the feed knows it (the service otherwise stamps it when it reads the tick); the
    tick-to-event latency is measured from it.  The engine ignores it.
    """

    symbol: str
    ts: datetime
    price: float
    received: float | None = field(default=None, compare=False)


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


def _empty_ints() -> IntArray:
    return np.zeros(0, dtype=np.intp)


@dataclass(slots=True)
class _Group:
    """One underlying root: a contiguous slice of the engine's book arrays.

    After the engine is built, the array attributes are VIEWS into the book arrays
    (writing ``group.vol0[:]`` writes the book), ``opt_idx`` are the option rows
    within the group and ``opt_rows`` the same rows in the book.
    """

    root: str
    keys: tuple[str, ...]
    is_option: BoolArray
    is_call: BoolArray
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
    market0: FloatArray = field(default_factory=lambda: np.zeros(0))
    """Market value per share at the start (quote mid / last in the spread); NaN = model."""
    opt_idx: IntArray = field(default_factory=_empty_ints)
    index: int = 0
    start: int = 0
    opt_rows: IntArray = field(default_factory=_empty_ints)


def _settle_epoch(expiry: date, settlement: str, calendar: SessionHours | None = None) -> float:
    """Epoch seconds of the settlement instant (THE domain function, on the exchange calendar)."""
    return settlement_instant(expiry, settlement, calendar).timestamp()


def _cat_f(parts: Sequence[FloatArray]) -> FloatArray:
    return np.concatenate(parts).astype(np.float64, copy=False) if parts else np.zeros(0)


def _cat_b(parts: Sequence[BoolArray]) -> BoolArray:
    return np.concatenate(parts).astype(np.bool_, copy=False) if parts else np.zeros(0, dtype=np.bool_)


class Engine:
    """Portfolio Greeks, regime and limit checks, updated tick by tick or batch by batch.

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
        False = reprice everything on every call (reference twin / benchmark baseline).
    calendar:
        The exchange calendar of settlement instants (default: XNYS).
    limits:
        The limits hook: regime name -> the :class:`LimitSet` this book is checked against
        (an account's own limits, ``domain.accounts.account_limits``); default: the
        regime's limits.
    """

    def __init__(
        self,
        inputs: EngineInputs,
        instruments: InstrumentTable,
        regimes: RegimeService,
        *,
        scope: str | None = None,
        incremental: bool = True,
        calendar: SessionHours | None = None,
        expansion: Expansion | None = None,
        limits: Callable[[str], LimitSet] | None = None,
    ) -> None:
        self._limits_hook = limits
        if calendar is None:
            from portfolio_pipeline.exchange_calendar import ExchangeCalendar

            calendar = ExchangeCalendar()
        self._calendar: SessionHours = calendar
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
        self._layout_book()
        self._symbols = frozenset((*self._groups, VOL_INDEX, VOL_INDEX_3M))
        self._option_roots = tuple(r for r, g in self._groups.items() if g.opt_idx.size)
        self._bad: set[str] = set()
        self._dirty: set[str] = set()
        n_groups = len(self._groups)
        self._exp = expansion if incremental else None
        self._grid: FloatArray = np.zeros((n_groups, 9, _N_TOTALS))
        self._has_grid: BoolArray = np.zeros(n_groups, dtype=np.bool_)
        self._grid_spot: FloatArray = np.ones(n_groups)
        self._grid_x: FloatArray = np.ones(n_groups)
        self._grid_t: FloatArray = np.zeros(n_groups)
        self._exact_spot: FloatArray = self._spot_g.copy()
        self._exact_x: FloatArray = np.ones(n_groups)
        step_s = expansion.spot_step if expansion else 0.0
        step_v = expansion.vol_step if expansion else 0.0
        self._h: FloatArray = np.full(n_groups, step_s)
        self._k: FloatArray = np.full(n_groups, step_v)
        self._calm: IntArray = np.zeros(n_groups, dtype=np.intp)  # exact reprices in a row after calm moves
        self._approx: set[str] = set()
        self._limits: tuple[float, float, float, float] | None = None
        self._stats = {"interpolated": 0, "exact": 0, "grids": 0, "guarded": 0, "narrowed": 0}
        self._max_error = 0.0
        errors = self._reprice(tuple(self._groups), self._last_ts)
        if errors:
            raise errors[0]
        self._mark_to_market()

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
        market0 = np.full(n, np.nan)
        q = float(inputs.dividend_yields.get(root, 0.0))
        for i, p in enumerate(positions):
            c = p.contract
            if not c.is_option:
                continue
            assert c.expiry is not None
            tc = instruments.trading_class(root, c.trading_class)
            settle[i] = _settle_epoch(c.expiry, tc.settlement_time, self._calendar)
            quote = quotes.get(c.key)
            if quote is not None:
                market0[i] = market_mark(quote.bid, quote.ask, quote.last)[0] or np.nan
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
            market0=market0,
        )
        group.opt_idx = np.flatnonzero(is_option)
        return group

    def _layout_book(self) -> None:
        """Concatenate the groups into pre-allocated book arrays; groups become views."""
        groups = list(self._groups.values())
        sizes = np.array([len(g.keys) for g in groups], dtype=np.intp)
        self._is_option: BoolArray = _cat_b([g.is_option for g in groups])
        self._is_call: BoolArray = _cat_b([g.is_call for g in groups])
        self._strike: FloatArray = _cat_f([g.strike for g in groups])
        self._settle: FloatArray = _cat_f([g.settle_epoch for g in groups])
        self._units: FloatArray = _cat_f([g.units for g in groups])
        self._mult: FloatArray = _cat_f([g.multiplier for g in groups])
        self._vol0: FloatArray = _cat_f([g.vol0 for g in groups])
        self._value0: FloatArray = _cat_f([g.value0 for g in groups])
        self._market0: FloatArray = _cat_f([g.market0 for g in groups])
        self._anchor: FloatArray = np.zeros(self._market0.size)  # market - model at the start
        self._gid: IntArray = np.repeat(np.arange(len(groups), dtype=np.intp), sizes)
        self._q_row: FloatArray = np.repeat(np.array([g.q for g in groups], dtype=np.float64), sizes)
        self._beta_row: FloatArray = np.repeat(np.array([g.beta for g in groups], dtype=np.float64), sizes)
        self._spot_g: FloatArray = np.array([self._spot[g.root] for g in groups], dtype=np.float64)
        self._starts: IntArray = (np.cumsum(sizes) - sizes).astype(np.intp)
        self._totals: FloatArray = np.zeros((len(groups), _N_TOTALS))
        n = int(sizes.sum())
        # Per-row model output, kept between batches (untouched groups keep theirs).
        self._delta: FloatArray = np.where(self._is_option, 0.0, 1.0)
        self._gamma: FloatArray = np.zeros(n)
        self._vega: FloatArray = np.zeros(n)
        self._theta: FloatArray = np.zeros(n)
        self._value: FloatArray = self._spot_g[self._gid] if n else np.zeros(0)
        self._stock_rows: IntArray = np.flatnonzero(~self._is_option)
        by_model: dict[Model, list[IntArray]] = {}
        for i, g in enumerate(groups):
            lo = int(self._starts[i])
            view = slice(lo, lo + int(sizes[i]))
            g.index, g.start = i, lo
            g.is_option, g.is_call, g.strike = self._is_option[view], self._is_call[view], self._strike[view]
            g.settle_epoch, g.units, g.multiplier = self._settle[view], self._units[view], self._mult[view]
            g.vol0, g.value0 = self._vol0[view], self._value0[view]
            g.totals = self._totals[i]
            g.opt_rows = (g.opt_idx + lo).astype(np.intp)
            if g.opt_rows.size:
                by_model.setdefault(g.model, []).append(g.opt_rows)
        self._all_opt_rows: dict[Model, IntArray] = {m: np.concatenate(r) for m, r in by_model.items()}

    def _mark_to_market(self) -> None:
        """Value every option with a good quote at its market (mid, or last inside the
        spread; :func:`~portfolio_pipeline.marketdata.valuation.market_mark`) and move it
        with the model from there: ``value = market0 + model(now) - model(start)``.
        Options without one stay at model price and are listed in :attr:`valued_at_model`."""
        marked = self._is_option & np.isfinite(self._market0)
        self._valued_at_model = frozenset(
            key for g in self._groups.values() for j, key in enumerate(g.keys)
            if g.is_option[j] and not math.isfinite(float(g.market0[j]))
        )
        if self._valued_at_model:
            logger.warning("engine: %s option(s) valued at model price (no good quote): %s",
                           len(self._valued_at_model), ", ".join(sorted(self._valued_at_model)))
        if marked.any():
            self._anchor = np.where(marked, self._market0 - self._value, 0.0)
            errors = self._reprice(tuple(self._groups), self._last_ts)
            if errors:
                raise errors[0]

    # ------------------------------------------------------------------ queries

    @property
    def valued_at_model(self) -> frozenset[str]:
        """Keys of the options valued at model price (no good quote at the start): flagged."""
        return self._valued_at_model

    @property
    def roots(self) -> tuple[str, ...]:
        return tuple(self._groups)

    @property
    def symbols(self) -> frozenset[str]:
        """Every symbol the engine accepts ticks for."""
        return self._symbols

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
        return int(self._units.size)

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

    @property
    def expansion_stats(self) -> dict[str, float]:
        """Group updates interpolated / repriced exactly, grids built, exact re-checks near
        a decision level, ranges narrowed, and the largest interpolation error measured
        (utilisation units)."""
        return {**self._stats, "max_error": self._max_error}

    @property
    def pending(self) -> frozenset[str]:
        """Groups dirtied by applied ticks and not repriced yet."""
        return frozenset(self._dirty)

    # ------------------------------------------------------------------ updates

    def _reprice(self, roots: Sequence[str], ts: datetime) -> list[NonFiniteGreeksError]:
        """Reprice the option rows of ``roots`` (one pricing call per model) and refresh
        those groups' sums; the groups whose sums are non-finite keep their last good ones."""
        groups = [self._groups[r] for r in roots]
        if not groups:
            return []
        if len(groups) == len(self._groups):
            rows_by_model = self._all_opt_rows
        else:
            parts: dict[Model, list[IntArray]] = {}
            for g in groups:
                if g.opt_rows.size:
                    parts.setdefault(g.model, []).append(g.opt_rows)
            rows_by_model = {m: p[0] if len(p) == 1 else np.concatenate(p) for m, p in parts.items()}
        now = ts.timestamp()
        vol_scale = self._vix / self._vix0
        spot_row = self._spot_g[self._gid]
        for model, idx in rows_by_model.items():
            t = np.maximum(self._settle[idx] - now, 0.0) / _YEAR_SECONDS
            res = pricing.greeks(
                self._is_call[idx], spot_row[idx], self._strike[idx], t, self._rate, self._q_row[idx],
                self._vol0[idx] * vol_scale, model,
            )
            self._delta[idx] = res.delta
            self._gamma[idx] = res.gamma
            self._vega[idx] = res.vega
            self._theta[idx] = res.theta
            self._value[idx] = res.price + self._anchor[idx]
        if self._stock_rows.size:
            self._value[self._stock_rows] = spot_row[self._stock_rows]
        # Whole-book aggregation: cheaper than slicing, and rows of untouched groups
        # reproduce their cached sums (their inputs have not changed).
        pg = position_greeks(
            delta=self._delta, gamma=self._gamma, vega=self._vega, theta=self._theta,
            quantity=self._units, multiplier=self._mult, spot=spot_row, beta=self._beta_row,
        )
        pnl = (self._value - self._value0) * self._units * self._mult
        rows = np.stack((
            pg.beta_weighted_dollar_delta, pg.dollar_gamma_1pct, pg.vega_per_point, pg.theta_per_day, pnl,
        ))
        sums = np.add.reduceat(rows, self._starts, axis=1)  # (totals, groups); NaN stays in its group
        nonfinite = (~np.isfinite(sums)).sum(axis=0)
        errors: list[NonFiniteGreeksError] = []
        for g in groups:
            bad = int(nonfinite[g.index])
            if bad:
                self._bad.add(g.root)
                errors.append(NonFiniteGreeksError(g.root, bad))
            else:
                self._bad.discard(g.root)
                self._totals[g.index] = sums[:, g.index]
                self._approx.discard(g.root)
                self._exact_spot[g.index] = self._spot_g[g.index]
                self._exact_x[g.index] = vol_scale
        return errors

    # ------------------------------------------------------------------ expansion

    def _build_grids(self, roots: Sequence[str], now: float) -> None:
        """Exact revaluation of ``roots`` on their 3 x 3 (spot, vol) grids, one pricing call per model."""
        groups = [self._groups[r] for r in roots]
        sizes = np.array([len(g.keys) for g in groups], dtype=np.intp)
        rows = np.concatenate([np.arange(g.start, g.start + len(g.keys), dtype=np.intp) for g in groups])
        bounds = (np.cumsum(sizes) - sizes).astype(np.intp)
        index = np.array([g.index for g in groups], dtype=np.intp)
        x = self._vix / self._vix0
        spot = self._spot_g[self._gid[rows]]
        s_grid = spot[None, :] * (1.0 + np.repeat(self._h[index], sizes)[None, :] * _DU[:, None])
        v_grid = (self._vol0[rows] * x)[None, :] * (1.0 + np.repeat(self._k[index], sizes)[None, :] * _DV[:, None])
        t = np.maximum(self._settle[rows] - now, 0.0) / _YEAR_SECONDS
        shape = s_grid.shape
        price = s_grid.copy()  # stock rows: value = spot, delta 1
        delta, gamma, vega, theta = np.ones(shape), np.zeros(shape), np.zeros(shape), np.zeros(shape)
        models = np.repeat(np.array([g.model for g in groups], dtype=object), sizes)
        option = self._is_option[rows]
        for model in {g.model for g in groups if g.opt_rows.size}:
            cols = np.flatnonzero(option & (models == model))
            m = (9, cols.size)

            def flat(a: FloatArray | BoolArray, c: IntArray = cols, m: tuple[int, int] = m) -> npt.NDArray[Any]:
                return np.broadcast_to(a[c], m).ravel()

            res = pricing.greeks(
                flat(self._is_call[rows]), s_grid[:, cols].ravel(), flat(self._strike[rows]), flat(t), self._rate,
                flat(self._q_row[rows]), v_grid[:, cols].ravel(), model,
            )
            price[:, cols] = res.price.reshape(m) + self._anchor[rows][cols]
            delta[:, cols] = res.delta.reshape(m)
            gamma[:, cols] = res.gamma.reshape(m)
            vega[:, cols] = res.vega.reshape(m)
            theta[:, cols] = res.theta.reshape(m)
        units = self._units[rows]
        pg = position_greeks(
            delta=delta, gamma=gamma, vega=vega, theta=theta, quantity=units, multiplier=self._mult[rows],
            spot=s_grid, beta=self._beta_row[rows],
        )
        pnl = (price - self._value0[rows]) * units * self._mult[rows]
        stacked = np.stack((
            pg.beta_weighted_dollar_delta, pg.dollar_gamma_1pct, pg.vega_per_point, pg.theta_per_day, pnl,
        ))
        sums = np.add.reduceat(stacked, bounds, axis=2)  # (totals, 9 points, groups)
        for j, g in enumerate(groups):
            grid = sums[:, :, j].T
            ok = bool(np.isfinite(grid).all())
            self._has_grid[g.index] = ok
            if ok:
                self._grid[g.index] = grid
                self._grid_spot[g.index] = self._spot_g[g.index]
                self._grid_x[g.index] = x
                self._grid_t[g.index] = now
        self._stats["grids"] += len(groups)

    def _interpolate(self, i: int, u: float, v: float, age: float) -> FloatArray:
        """Group ``i``'s totals at grid coordinates (u, v) in [-1, 1]^2, ``age`` seconds on."""
        lu = (0.5 * u * (u - 1.0), 1.0 - u * u, 0.5 * u * (u + 1.0))
        lv = (0.5 * v * (v - 1.0), 1.0 - v * v, 0.5 * v * (v + 1.0))
        w = np.array([a * b for a in lu for b in lv])
        totals: FloatArray = w @ self._grid[i]
        totals[4] += totals[3] * age / 86400.0  # theta is per calendar day
        return totals

    def _coordinates(self, i: int, x: float, now: float) -> tuple[float, float, float] | None:
        """Grid coordinates of group ``i`` now, None when outside its range (or no grid)."""
        exp = self._exp
        if exp is None or not self._has_grid[i]:
            return None
        u = (self._spot_g[i] / self._grid_spot[i] - 1.0) / self._h[i]
        v = (x / self._grid_x[i] - 1.0) / self._k[i]
        age = now - self._grid_t[i]
        if abs(u) <= 1.0 and abs(v) <= 1.0 and 0.0 <= age <= exp.max_age_seconds:
            return float(u), float(v), float(age)
        return None

    def _measure(self, estimates: Mapping[int, FloatArray]) -> None:
        """Interpolated vs exact totals of repriced groups; a group over the bound gets half the range."""
        exp = self._exp
        if exp is None or self._limits is None or not estimates:
            return
        lim = np.array(self._limits)
        nlv = self._nlv0 + float(self._totals[:, 4].sum())
        for i, est in estimates.items():
            if not np.isfinite(self._totals[i]).all():
                continue
            diff = np.abs(est - self._totals[i]) / abs(nlv)
            err = float(np.max(np.divide(diff[:4], lim, out=np.zeros(4), where=lim > 0)) + diff[4])
            self._max_error = max(self._max_error, err)
            if err > exp.guard / 2.0:
                self._h[i] /= 2.0
                self._k[i] /= 2.0
                self._has_grid[i] = False
                self._stats["narrowed"] += 1
                logger.warning("engine: interpolation error %.4f over the bound %.4f for %s; range halved",
                               err, exp.guard / 2.0, list(self._groups)[i])

    def apply(self, tick: Tick) -> None:
        """Validate one tick and apply it (prices/levels and dirty groups; no repricing).

        Raises :class:`BadTickError` / :class:`UnknownContractError` with nothing changed.
        """
        symbol = tick.symbol.upper() if isinstance(tick.symbol, str) else ""
        if symbol not in self._symbols:
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
            self._dirty.update(self._option_roots)  # lazily: repriced once per batch
        elif symbol == VOL_INDEX_3M:
            self._vix3m = price
        else:
            self._spot[symbol] = price
            self._spot_g[self._groups[symbol].index] = price
            self._dirty.add(symbol)

    def reprice_pending(self) -> list[NonFiniteGreeksError]:
        """Reprice every group dirtied since the last call (all of them for the twin) at
        the latest tick time; the non-finite ones, if any (their last good sums stand)."""
        if self._incremental:
            roots: tuple[str, ...] = tuple(r for r in self._groups if r in self._dirty)
        else:
            roots = tuple(self._groups)
        self._dirty.clear()
        exp = self._exp
        if exp is None:
            return self._reprice(roots, self._last_ts)
        x = self._vix / self._vix0
        now = self._last_ts.timestamp()
        exact: list[str] = []
        calm: list[str] = []
        estimates: dict[int, FloatArray] = {}
        for root in roots:
            i = self._groups[root].index
            at = self._coordinates(i, x, now)
            if at is not None:
                self._totals[i] = self._interpolate(i, *at)
                self._approx.add(root)
                self._stats["interpolated"] += 1
                continue
            if self._has_grid[i]:  # out of range: was the estimate still good at the range's edge?
                u = (self._spot_g[i] / self._grid_spot[i] - 1.0) / self._h[i]
                v = (x / self._grid_x[i] - 1.0) / self._k[i]
                if abs(u) <= 1.0 and abs(v) <= 1.0:  # only the age ran out: measurable
                    estimates[i] = self._interpolate(i, float(u), float(v), now - self._grid_t[i])
            exact.append(root)
            if (abs(self._spot_g[i] / self._exact_spot[i] - 1.0) <= self._h[i]
                    and abs(x / self._exact_x[i] - 1.0) <= self._k[i]):
                self._calm[i] += 1
                if self._calm[i] >= 2:  # two calm moves in a row: the grid will be used
                    calm.append(root)
            else:
                self._calm[i] = 0
        self._stats["exact"] += len(exact)
        errors = self._reprice(tuple(exact), self._last_ts)
        self._measure(estimates)
        good = [r for r in calm if r not in self._bad]
        if good:
            self._build_grids(good, now)
        return errors

    def reprice_all(self) -> None:
        """Reprice every group exactly at the last tick time (no interpolated total stays):
        what a caller summing several engines does before a decision near a limit."""
        estimates = {self._groups[r].index: self._totals[self._groups[r].index].copy() for r in self._approx}
        self._reprice(tuple(self._groups), self._last_ts)  # a non-finite group keeps its last good sums
        self._approx.clear()
        self._measure(estimates)

    def on_ticks(self, ticks: Iterable[Tick]) -> RiskState:
        """Apply ticks, reprice each touched group once, and evaluate once.

        Raises :class:`BadTickError` / :class:`UnknownContractError` at the first bad
        tick (that tick changes nothing; the ticks before it stay applied and are
        repriced by the next call -- use :meth:`apply` per tick to skip bad ones and
        go on).  Raises :class:`NonFiniteGreeksError` when a group's repricing is
        non-finite (its last good totals stay in force; the other groups are updated
        and the state is still evaluated by the next call).
        """
        for tick in ticks:
            self.apply(tick)
        errors = self.reprice_pending()
        if errors:
            raise errors[0]
        return self.evaluate()

    def on_tick(self, tick: Tick) -> RiskState:
        return self.on_ticks((tick,))

    def risk_snapshot(self) -> RiskSnapshot:
        totals = self._totals.sum(axis=0)
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
        if self._limits_hook is not None:
            regime = dataclasses.replace(regime, limits=self._limits_hook(regime.name))
        lim = regime.limits
        self._limits = (lim.max_abs_beta_weighted_delta, lim.max_short_gamma, lim.max_abs_vega, abs(lim.min_theta))
        risk = self.risk_snapshot()
        checks = evaluate_limits(risk, regime)
        exp = self._exp
        if exp is not None and any(
            not math.isfinite(c.utilisation) or abs(c.utilisation - level) <= exp.guard
            for c in checks for level in exp.levels
        ):  # a decision rests on these numbers: what full revaluation gives, every group at this instant
            estimates = {self._groups[r].index: self._totals[self._groups[r].index].copy() for r in self._approx}
            self._reprice(tuple(self._groups), self._last_ts)  # a non-finite group keeps its last good sums
            self._approx.clear()
            self._stats["guarded"] += 1
            self._measure(estimates)
            risk = self.risk_snapshot()
            checks = evaluate_limits(risk, regime)
        return RiskState(
            ts=self._last_ts,
            risk=risk,
            regime=regime,
            checks=tuple(checks),
            spots=MappingProxyType(dict(self._spot)),
        )
