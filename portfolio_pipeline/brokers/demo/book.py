"""The demo book: a deterministic, rule-based premium-selling book replayed on history.

One pass over the sessions from ``start`` to the end of the history builds the
whole record (executions, cash flows and the end-of-day state of every session);
the same ``(start, seed, manual trades)`` always gives the identical record.

Daily cycle of session ``d`` (all prices are closes of ``d``)
---------------------------------------------------------------
1. External cash flows dated ``d`` (initial deposit on ``start``; one more deposit
   ~3 months later and one withdrawal ~11 months later).
2. Expiries dated ``d``: PM classes settle on the close, AM classes (SPX, NDX
   monthlies) on the opening print.  Cash-settled index options pay intrinsic in
   cash (an ``expiry`` execution at the intrinsic value, 0 when out of the money);
   ETF options out of the money expire at 0; in the money they are assigned (short)
   or exercised (long) into 100 shares per contract.  An assignment books the option
   as bought back at its average open price (realised P&L 0) and the shares at
   ``strike - premium`` (puts) or ``strike + premium`` (calls): the premium is counted
   once, folded into the share basis, and cash moves by exactly strike x shares.
   No early exercise is simulated.
3. Orders decided at the previous close are filled at this close: each leg at the
   model mid -/+ a seeded slippage of 20-60 % of the half spread, tick-rounded,
   plus commissions and fees (:mod:`.margin`).  ("Signals at the close, orders
   worked the next session.")
4. Manual trades (``DemoBroker.transmit``) dated ``d`` are booked at their recorded
   prices.
5. The end-of-day state is recorded; the rules look at it and queue orders for the
   next session.

Strategies (sizes from NLV at the decision)
--------------------------------------------
* ``iron_condor`` SPX (AM monthlies): ~45 DTE (38-60), 16-delta short put and call,
  100-point wings; risk ``IC_RISK`` of NLV.
* ``put_vertical`` NDX (AM monthlies): ~45 DTE, 20-delta short put, 100 points wide;
  risk ``PCS_RISK`` of NLV.
* Both credit spreads: take profit at 50 % of the credit, stop when the loss
  reaches 2x the credit, and at 21 DTE are rolled (close + open of the next
  monthly in one order, both sides sharing one ``order_ref`` ``ROLL-nnnn``).
* ``calendar`` SPX (SPXW PM): ATM put, short the monthly 21-38 DTE, long the next
  monthly; take profit +25 %, stop -50 % of the debit, otherwise the short leg
  settles at expiry and the long leg is sold the same session.
* ``short_put`` / ``covered_call`` SPY wheel: a 30-delta monthly put (24-45 DTE)
  sized at ``WHEEL_NOTIONAL`` of NLV, held to expiry; if assigned, 30-delta covered
  calls on the shares until they are called away.
* ``long_put`` SPX hedge (SPXW): an 8-delta put 50-80 DTE (one per $1M of NLV), bought whenever no hedge
  has more than 30 DTE left; held to expiry.
* New short-premium positions are not opened while the VIX term structure is
  inverted (VIX >= model VIX3M).

Books (:data:`PROFILES`, ``accounts.yaml`` ``demo.book``)
---------------------------------------------------------
* ``index``: everything above, $500k initial deposit, the deposit and the withdrawal
  (the demo's original single account; its record does not depend on the other books).
* ``wheel`` (an IRA): only the SPY wheel, sized at ``0.90`` of NLV so each short put
  stays cash-secured (the strike x 100 x contracts fits in the cash) and assigned
  shares are only ever sold as covered calls; $150k initial deposit and a $25,000
  transfer IN ~150 days after the start.
* ``verticals`` (a Tastytrade-style account): only the NDX put verticals, risking
  ``0.10`` of NLV each; $100k initial deposit and the matching $25,000 transfer OUT on
  the same session (kind ``transfer``: an external flow in both accounts, so neither
  shows it as performance and the consolidated book sees none).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Final

import numpy as np

from portfolio_pipeline.brokers.demo.margin import commission
from portfolio_pipeline.brokers.demo.market import DemoMarket, round_to_tick
from portfolio_pipeline.domain.activity import CashFlow, Execution, ExecutionKind
from portfolio_pipeline.domain.positions import Contract, Right

logger = logging.getLogger(__name__)

BROKER: Final[str] = "demo"
INITIAL_DEPOSIT: Final[float] = 500_000.0
LATER_DEPOSIT: Final[tuple[int, float]] = (91, 100_000.0)
WITHDRAWAL: Final[tuple[int, float]] = (335, -75_000.0)
IC_RISK: Final[float] = 0.08
IC_WING: Final[float] = 100.0
PCS_RISK: Final[float] = 0.05
PCS_WIDTH: Final[float] = 100.0
CAL_DEBIT: Final[float] = 0.01
WHEEL_NOTIONAL: Final[float] = 0.30
HEDGE_PER_NLV: Final[float] = 1_000_000.0
HEDGE_DELTA: Final[float] = -0.08
TAKE_PROFIT: Final[float] = 0.50
STOP_MULTIPLE: Final[float] = 2.0
CLOSE_DTE: Final[int] = 21
SLIPPAGE: Final[tuple[float, float]] = (0.2, 0.6)
_EPS: Final[float] = 1e-9
TRANSFER: Final[tuple[int, float]] = (150, 25_000.0)
"""Days after the start and amount of the demo transfer (verticals -> wheel account)."""


@dataclass(frozen=True, slots=True)
class BookProfile:
    """What one simulated account trades and which external flows it has.

    ``flows``: (days after the start, amount, kind, description); the flow lands on the
    first session on or after that day.  ``exec_prefix``: the prefix of execution and
    cash-flow ids (one per account, so ids never collide across demo accounts)."""

    strategies: frozenset[str]
    initial_deposit: float
    flows: tuple[tuple[int, float, str, str], ...]
    wheel_notional: float = WHEEL_NOTIONAL
    pcs_risk: float = PCS_RISK
    exec_prefix: str = "DEMO"


PROFILES: Final[dict[str, BookProfile]] = {
    "index": BookProfile(
        frozenset({"iron_condor", "put_vertical", "calendar", "wheel", "long_put"}), INITIAL_DEPOSIT,
        ((LATER_DEPOSIT[0], LATER_DEPOSIT[1], "deposit", "owner deposit"),
         (WITHDRAWAL[0], WITHDRAWAL[1], "withdrawal", "owner withdrawal"))),
    "wheel": BookProfile(
        frozenset({"wheel"}), 150_000.0,
        ((TRANSFER[0], TRANSFER[1], "transfer", "transfer in from the verticals account"),),
        wheel_notional=0.90, exec_prefix="DEMO-IRA"),
    "verticals": BookProfile(
        frozenset({"put_vertical"}), 100_000.0,
        ((TRANSFER[0], -TRANSFER[1], "transfer", "transfer out to the wheel account"),),
        pcs_risk=0.10, exec_prefix="DEMO-TT"),
}

#: The demo "exchange" contract specs: the multiplier its payloads report.  The adapter
#: checks them against config/instruments.yaml (a mismatch is an error, not a guess).
EXCHANGE_MULTIPLIER: Final[dict[str, float]] = {"SPX": 100.0, "NDX": 100.0, "SPY": 100.0, "QQQ": 100.0}


def exchange_multiplier(contract: Contract) -> float:
    """Multiplier the demo venue reports for ``contract`` (1 for shares/index units)."""
    return EXCHANGE_MULTIPLIER[contract.underlying.upper()] if contract.is_option else 1.0


@dataclass(frozen=True, slots=True)
class ManualTrade:
    """A person's transmitted order, booked at ``session`` at the recorded leg prices."""

    session: int
    ts: datetime
    order_id: str
    broker_order_id: str
    legs: tuple[tuple[Contract, float, float], ...]
    """(contract, signed quantity, price per share) per leg."""


@dataclass(frozen=True, slots=True)
class LotState:
    contract: Contract
    quantity: float
    avg_price: float
    multiplier: float


@dataclass(frozen=True, slots=True)
class GroupState:
    group_id: str
    strategy: str
    legs: tuple[tuple[Contract, float], ...]


@dataclass(frozen=True, slots=True)
class BookDay:
    """End-of-day state of one session."""

    session: int
    cash: float
    lots: tuple[LotState, ...]
    groups: tuple[GroupState, ...]


@dataclass(slots=True)
class _Group:
    group_id: str
    strategy: str
    root: str
    opened: int
    entry_value: float
    legs: dict[str, float] = field(default_factory=dict)
    contracts: dict[str, Contract] = field(default_factory=dict)

    def expiry(self) -> date:
        return min(c.expiry for c in self.contracts.values() if c.expiry is not None)


@dataclass(frozen=True, slots=True)
class _Open:
    strategy: str
    root: str
    legs: tuple[tuple[Contract, float], ...]


@dataclass(frozen=True, slots=True)
class _Order:
    ref: str
    reason: str
    closes: tuple[str, ...]
    opens: tuple[_Open, ...]


class DemoBook:
    """Simulated account history (see the module docstring for the rules).

    Parameters
    ----------
    market : DemoMarket
        Prices, vols, expiries and quotes.
    start : datetime.date
        First session (the initial deposit); must be a session of the history.
    seed : int
        Seeds the per-order slippage draws (``numpy`` PCG64 keyed by seed, session
        and order number, so draws do not depend on other orders).
    account_id : str
        Account the executions and cash flows belong to.
    manual : sequence of ManualTrade
        Trades transmitted by a person, replayed on their sessions.
    profile : BookProfile
        What the account trades and its external flows (default: the ``index`` book).
    """

    def __init__(
        self,
        market: DemoMarket,
        *,
        start: date,
        seed: int,
        account_id: str,
        manual: Sequence[ManualTrade] = (),
        profile: BookProfile | None = None,
    ) -> None:
        self.profile = PROFILES["index"] if profile is None else profile
        self.market = market
        self.start_index = market.index_of(start)
        self.seed = seed
        self.account_id = account_id
        self._manual = tuple(manual)
        self._paths: dict[str, tuple[int, np.ndarray]] = {}
        self.days: list[BookDay] = []
        self.executions: list[tuple[int, Execution]] = []
        self.cash_flows: list[tuple[int, CashFlow]] = []
        self._cash = 0.0
        self._lots: dict[str, LotState] = {}
        self._groups: dict[str, _Group] = {}
        self._counter = 0
        self._roll_counter = 0
        self._traded: set[tuple[str, date]] = set()
        self._exec_seq = 0
        self._run()

    # ------------------------------------------------------------------ marks

    def mark(self, contract: Contract, i: int) -> float:
        """Model value per share of ``contract`` at the close of session ``i``."""
        root = contract.underlying.upper()
        if not contract.is_option:
            return float(self.market.spot(root, i))
        key = contract.key
        cached = self._paths.get(key)
        if cached is None or i < cached[0] or i >= cached[0] + cached[1].size:
            assert contract.expiry is not None and contract.strike is not None and contract.right
            last = self.market.last_session
            end = self.market.index_of(contract.expiry) if contract.expiry <= last else len(self.market.sessions) - 1
            if i > end:
                raise ValueError(f"demo book: {key} has expired before {self.market.sessions[i]}")
            path = self.market.option_path(
                root, contract.trading_class, contract.expiry, contract.strike, contract.right, i, end
            )
            cached = (i, path)
            self._paths[key] = cached
        return float(cached[1][i - cached[0]])

    def nlv(self, day: BookDay) -> float:
        return day.cash + sum(
            lot.quantity * lot.multiplier * self.mark(lot.contract, day.session) for lot in day.lots
        )

    def day(self, i: int) -> BookDay | None:
        """End-of-day state of session ``i`` (None before ``start``)."""
        k = i - self.start_index
        if k < 0:
            return None
        return self.days[k]

    # ------------------------------------------------------------------ booking

    def _next_exec_id(self, i: int) -> str:
        self._exec_seq += 1
        return f"{self.profile.exec_prefix}-{self.market.sessions[i]:%Y%m%d}-{self._exec_seq:05d}"

    def _book(
        self,
        i: int,
        ts: datetime,
        contract: Contract,
        quantity: float,
        price: float,
        *,
        kind: ExecutionKind = "trade",
        ref: str | None = None,
        basis: float | None = None,
        charge: bool = True,
    ) -> Execution:
        mult = exchange_multiplier(contract)
        comm, fees = commission(contract, quantity) if charge else (0.0, 0.0)
        execution = Execution(
            broker=BROKER, account_id=self.account_id, exec_id=self._next_exec_id(i), contract=contract,
            ts=ts, quantity=quantity, price=price, multiplier=mult, commission=comm, fees=fees,
            kind=kind, order_ref=ref,
        )
        self.executions.append((i, execution))
        self._cash += execution.cash_effect
        key = contract.key
        basis_price = price if basis is None else basis
        lot = self._lots.get(key)
        if lot is None:
            self._lots[key] = LotState(contract, quantity, basis_price, mult)
        else:
            new = lot.quantity + quantity
            if abs(new) < _EPS:
                del self._lots[key]
            elif lot.quantity * quantity > 0:
                avg = (lot.avg_price * lot.quantity + basis_price * quantity) / new
                self._lots[key] = LotState(contract, new, avg, mult)
            elif lot.quantity * new > 0:
                self._lots[key] = LotState(contract, new, lot.avg_price, mult)
            else:
                self._lots[key] = LotState(contract, new, basis_price, mult)
        return execution

    def _group_leg(self, group_id: str, contract: Contract, quantity: float) -> None:
        g = self._groups[group_id]
        key = contract.key
        g.contracts[key] = contract
        new = g.legs.get(key, 0.0) + quantity
        if abs(new) < _EPS:
            g.legs.pop(key, None)
        else:
            g.legs[key] = new
        if not g.legs:
            del self._groups[group_id]

    def _drop_from_groups(self, contract: Contract) -> None:
        key = contract.key
        for gid in list(self._groups):
            if key in self._groups[gid].legs:
                self._group_leg(gid, contract, -self._groups[gid].legs[key])

    def _new_group(self, strategy: str, root: str, i: int, prefix: str | None = None) -> str:
        self._counter += 1
        gid = f"{prefix or strategy.upper()}-{self._counter:04d}"
        self._groups[gid] = _Group(gid, strategy, root, i, 0.0)
        return gid

    def _stock_group(self, root: str, i: int) -> str:
        gid = f"STK-{root}"
        if gid not in self._groups:
            self._groups[gid] = _Group(gid, "stock", root, i, 0.0)
        return gid

    # ------------------------------------------------------------------ the run

    def _run(self) -> None:
        m = self.market
        flows = self._flow_schedule()
        pending: list[_Order] = []
        manual_by_session: dict[int, list[ManualTrade]] = {}
        for trade in self._manual:
            manual_by_session.setdefault(trade.session, []).append(trade)
        for i in range(self.start_index, len(m.sessions)):
            d = m.sessions[i]
            self._exec_seq = 0
            for n, (amount, kind, text) in enumerate(flows.get(i, ())):
                self._cash += amount
                self.cash_flows.append(
                    (i, CashFlow(BROKER, self.account_id, f"{self.profile.exec_prefix}-CF-{d:%Y%m%d}-{n}", m.open_time(d),
                                 kind, amount, description=text))  # type: ignore[arg-type]
                )
            self._settle_expiries(i)
            for k, order in enumerate(pending):
                self._fill(i, order, k)
            for trade in manual_by_session.get(i, ()):
                self._book_manual(i, trade)
            self.days.append(self._snapshot(i))
            pending = self._decide(i) if i + 1 < len(m.sessions) else []
        logger.info(
            "demo book simulated start=%s sessions=%d executions=%d", m.sessions[self.start_index],
            len(self.days), len(self.executions),
        )

    def _flow_schedule(self) -> dict[int, list[tuple[float, str, str]]]:
        m = self.market
        start = m.sessions[self.start_index]
        out: dict[int, list[tuple[float, str, str]]] = {
            self.start_index: [(self.profile.initial_deposit, "deposit", "initial deposit")]
        }
        for days, amount, kind, text in self.profile.flows:
            target = start + timedelta(days=days)
            idx = next((k for k in range(self.start_index, len(m.sessions)) if m.sessions[k] >= target), None)
            if idx is not None:
                out.setdefault(idx, []).append((amount, kind, text))
        return out

    def _snapshot(self, i: int) -> BookDay:
        return BookDay(
            session=i,
            cash=self._cash,
            lots=tuple(self._lots.values()),
            groups=tuple(
                GroupState(g.group_id, g.strategy, tuple((g.contracts[k], q) for k, q in g.legs.items()))
                for g in self._groups.values()
            ),
        )

    # ------------------------------------------------------------------ expiries

    def _settle_expiries(self, i: int) -> None:
        m = self.market
        d = m.sessions[i]
        for key, lot in list(self._lots.items()):
            c = lot.contract
            if not c.is_option or c.expiry != d or key not in self._lots:
                continue
            assert c.strike is not None
            root = c.underlying.upper()
            am = m.is_am_settled(root, c.trading_class)
            ts = m.open_time(d) if am else m.close_time(d)
            settle = m.opening(root, i) if am else float(m.spot(root, i))
            intrinsic = max(settle - c.strike, 0.0) if c.right == "C" else max(c.strike - settle, 0.0)
            self._drop_from_groups(c)
            spec = m.instruments.spec(root).options
            physical = spec is not None and spec.settlement == "physical"
            if not physical or intrinsic <= 0.0:
                self._book(i, ts, c, -lot.quantity, round(intrinsic, 4), kind="expiry", charge=False)
                continue
            kind: ExecutionKind = "assignment" if lot.quantity < 0 else "exercise"
            premium = lot.avg_price
            self._book(i, ts, c, -lot.quantity, premium, kind=kind, charge=False)
            shares = lot.quantity * lot.multiplier * (1.0 if c.right == "C" else -1.0)
            stock_price = c.strike + premium if c.right == "C" else c.strike - premium
            stock = Contract(underlying=root, sec_type="STK")
            self._book(i, ts, stock, shares, round(stock_price, 6), kind=kind, charge=False,
                       ref=f"{kind.upper()}-{c.key}")
            self._group_leg(self._stock_group(root, i), stock, shares)
            logger.info("demo %s %s shares=%s price=%s", kind, c.key, shares, stock_price)

    # ------------------------------------------------------------------ fills

    def _fill(self, i: int, order: _Order, k: int) -> None:
        m = self.market
        d = m.sessions[i]
        ts = m.close_time(d) - timedelta(minutes=5)
        rng = np.random.default_rng([self.seed, i, k])
        u = float(rng.uniform(*SLIPPAGE))
        for gid in order.closes:
            g = self._groups.get(gid)
            if g is None:
                continue
            for key, qty in list(g.legs.items()):
                c = g.contracts[key]
                self._trade_leg(i, ts, c, -qty, u, order.ref, gid)
        for spec in order.opens:
            gid = self._new_group(spec.strategy, spec.root, i)
            value = 0.0
            for c, qty in spec.legs:
                price = self._trade_leg(i, ts, c, qty, u, order.ref, gid)
                value -= qty * price * exchange_multiplier(c)
            if gid in self._groups:
                self._groups[gid].entry_value = value
                first = spec.legs[0][0]
                assert first.expiry is not None
                self._traded.add((spec.strategy, first.expiry))

    def _trade_leg(self, i: int, ts: datetime, c: Contract, qty: float, u: float, ref: str, gid: str) -> float:
        m = self.market
        root = c.underlying.upper()
        mid = self.mark(c, i)
        bid, ask = m.option_bid_ask(root, i, np.array([mid]))
        half = float(ask[0] - bid[0]) / 2.0
        raw = mid + u * half if qty > 0 else mid - u * half
        price = max(float(round_to_tick(raw, m.tick(root), "nearest")), 0.0)
        self._book(i, ts, c, qty, price, ref=ref)
        self._group_leg(gid, c, qty)
        return price

    def _book_manual(self, i: int, trade: ManualTrade) -> None:
        root = trade.legs[0][0].underlying.upper()
        gid = self._new_group("manual", root, i, prefix="MANUAL")
        value = 0.0
        for c, qty, price in trade.legs:
            self._book(i, trade.ts, c, qty, price, ref=trade.broker_order_id)
            self._group_leg(gid, c, qty)
            value -= qty * price * exchange_multiplier(c)
        if gid in self._groups:
            self._groups[gid].entry_value = value

    # ------------------------------------------------------------------ rules

    def _group_value(self, g: _Group, i: int) -> float:
        return sum(q * exchange_multiplier(g.contracts[k]) * self.mark(g.contracts[k], i) for k, q in g.legs.items())

    def _decide(self, i: int) -> list[_Order]:
        m = self.market
        d = m.sessions[i]
        day = self.days[-1]
        nlv = self.nlv(day)
        inverted = bool(m.vix[i] >= m.vix3m[i])
        orders: list[_Order] = []
        open_by_strategy: dict[str, list[_Group]] = {}
        for g in self._groups.values():
            open_by_strategy.setdefault(g.strategy, []).append(g)
        nxt = m.sessions[i + 1]

        # Credit spreads: take profit, stop, roll at 21 DTE.
        trades = self.profile.strategies
        spreads = tuple(s for s in ("iron_condor", "put_vertical") if s in trades)
        rolling: set[str] = set()
        for strategy in spreads:
            for g in open_by_strategy.get(strategy, []):
                credit = g.entry_value
                cost = -self._group_value(g, i)
                dte = (g.expiry() - d).days
                if credit > 0 and cost <= (1.0 - TAKE_PROFIT) * credit:
                    orders.append(_Order(f"{g.group_id}:take-profit", "take_profit", (g.group_id,), ()))
                elif credit > 0 and cost - credit >= STOP_MULTIPLE * credit:
                    orders.append(_Order(f"{g.group_id}:stop", "stop", (g.group_id,), ()))
                elif dte <= CLOSE_DTE:
                    new = None if inverted else self._entry(strategy, i, nlv)
                    if new is None:
                        orders.append(_Order(f"{g.group_id}:21dte", "close_21dte", (g.group_id,), ()))
                    else:
                        self._roll_counter += 1
                        orders.append(_Order(f"ROLL-{self._roll_counter:04d}", "roll", (g.group_id,), (new,)))
                    rolling.add(strategy)
        for strategy in spreads:
            if open_by_strategy.get(strategy) or strategy in rolling or inverted:
                continue
            new = self._entry(strategy, i, nlv)
            if new is not None:
                orders.append(_Order(f"{strategy}:open:{nxt}", "open", (), (new,)))

        # Calendar.
        cals = open_by_strategy.get("calendar", [])
        for g in cals:
            debit = -g.entry_value
            value = self._group_value(g, i)
            if nxt >= g.expiry():
                orders.append(_Order(f"{g.group_id}:front-expiry", "front_expiry", (g.group_id,), ()))
            elif debit > 0 and value >= 1.25 * debit:
                orders.append(_Order(f"{g.group_id}:take-profit", "take_profit", (g.group_id,), ()))
            elif debit > 0 and value <= 0.5 * debit:
                orders.append(_Order(f"{g.group_id}:stop", "stop", (g.group_id,), ()))
        if not cals and "calendar" in trades:
            new = self._calendar(i, nlv)
            if new is not None:
                orders.append(_Order(f"calendar:open:{nxt}", "open", (), (new,)))

        # SPY wheel.
        shares = sum(lot.quantity for lot in day.lots if lot.contract.sec_type == "STK" and lot.contract.underlying == "SPY")
        wheel = "wheel" in trades
        if wheel and shares > 0 and not open_by_strategy.get("covered_call"):
            new = self._single("SPY", "SPY", "C", 0.30, i, (24, 45, 35), -int(shares // 100), "covered_call")
            if new is not None:
                orders.append(_Order(f"covered_call:open:{nxt}", "open", (), (new,)))
        elif wheel and shares <= 0 and not open_by_strategy.get("short_put") and not inverted:
            spot = float(m.spot("SPY", i))
            units = int(self.profile.wheel_notional * nlv // (spot * 100.0))
            new = self._single("SPY", "SPY", "P", -0.30, i, (24, 45, 35), -units, "short_put")
            if new is not None:
                orders.append(_Order(f"short_put:open:{nxt}", "open", (), (new,)))

        # Long put hedge.
        hedges = open_by_strategy.get("long_put", [])
        if "long_put" in trades and not any((g.expiry() - d).days > 30 for g in hedges):
            units = max(1, round(nlv / HEDGE_PER_NLV))
            new = self._single("SPX", "SPXW", "P", HEDGE_DELTA, i, (50, 80, 60), units, "long_put")
            if new is not None:
                orders.append(_Order(f"long_put:open:{nxt}", "open", (), (new,)))
        return orders

    def _expiry(self, root: str, tc: str, i: int, window: tuple[int, int, int], strategy: str) -> date | None:
        d = self.market.sessions[i]
        lo, hi, target = window
        cands = [
            e for e in self.market.expiries(root, tc, d + timedelta(days=1), kind="monthly")
            if lo <= (e - d).days <= hi and (strategy, e) not in self._traded
        ]
        if not cands:
            return None
        return min(cands, key=lambda e: (abs((e - d).days - target), e))

    def _by_delta(self, root: str, tc: str, expiry: date, right: Right, target: float, i: int) -> float:
        m = self.market
        spot = float(m.spot(root, i))
        strikes = m.strike_grid(root, spot)
        T = np.full(strikes.size, float(m.year_fraction(root, tc, expiry, i)))
        delta = m.european_delta(root, i, [right] * strikes.size, strikes, T)
        return float(strikes[int(np.argmin(np.abs(delta - target)))])

    @staticmethod
    def _opt(root: str, tc: str, expiry: date, strike: float, right: Right) -> Contract:
        return Contract(underlying=root, sec_type="OPT", expiry=expiry, strike=strike, right=right, trading_class=tc)

    def _entry(self, strategy: str, i: int, nlv: float) -> _Open | None:
        if strategy == "iron_condor":
            expiry = self._expiry("SPX", "SPX", i, (38, 60, 45), strategy)
            if expiry is None:
                return None
            kp = self._by_delta("SPX", "SPX", expiry, "P", -0.16, i)
            kc = self._by_delta("SPX", "SPX", expiry, "C", 0.16, i)
            units = max(1, int(IC_RISK * nlv // (IC_WING * 100.0)))
            legs: tuple[tuple[Contract, float], ...] = (
                (self._opt("SPX", "SPX", expiry, kp - IC_WING, "P"), float(units)),
                (self._opt("SPX", "SPX", expiry, kp, "P"), -float(units)),
                (self._opt("SPX", "SPX", expiry, kc, "C"), -float(units)),
                (self._opt("SPX", "SPX", expiry, kc + IC_WING, "C"), float(units)),
            )
            return _Open(strategy, "SPX", legs)
        expiry = self._expiry("NDX", "NDX", i, (38, 60, 45), strategy)
        if expiry is None:
            return None
        kp = self._by_delta("NDX", "NDX", expiry, "P", -0.20, i)
        units = max(1, int(self.profile.pcs_risk * nlv // (PCS_WIDTH * 100.0)))
        legs = (
            (self._opt("NDX", "NDX", expiry, kp - PCS_WIDTH, "P"), float(units)),
            (self._opt("NDX", "NDX", expiry, kp, "P"), -float(units)),
        )
        return _Open(strategy, "NDX", legs)

    def _calendar(self, i: int, nlv: float) -> _Open | None:
        m = self.market
        d = m.sessions[i]
        monthlies = m.expiries("SPX", "SPXW", d + timedelta(days=1), kind="monthly")
        fronts = [e for e in monthlies if 21 <= (e - d).days <= 38 and ("calendar", e) not in self._traded]
        if not fronts:
            return None
        front = fronts[0]
        backs = [e for e in monthlies if e > front]
        if not backs:
            return None
        back = backs[0]
        strike = float(round(float(m.spot("SPX", i)) / 25.0) * 25.0)
        T = np.array([float(m.year_fraction("SPX", "SPXW", e, i)) for e in (front, back)])
        vals = m.option_values_at("SPX", i, ["P", "P"], np.array([strike, strike]), T)
        debit = float(vals[1] - vals[0]) * 100.0
        if debit <= 0:
            return None
        units = int(min(5, max(1, CAL_DEBIT * nlv // debit)))
        legs = (
            (self._opt("SPX", "SPXW", front, strike, "P"), -float(units)),
            (self._opt("SPX", "SPXW", back, strike, "P"), float(units)),
        )
        return _Open("calendar", "SPX", legs)

    def _single(
        self, root: str, tc: str, right: Right, delta: float, i: int, window: tuple[int, int, int],
        units: int, strategy: str,
    ) -> _Open | None:
        if units == 0:
            return None
        expiry = self._expiry(root, tc, i, window, strategy)
        if expiry is None:
            return None
        strike = self._by_delta(root, tc, expiry, right, delta, i)
        return _Open(strategy, root, ((self._opt(root, tc, expiry, strike, right), float(units)),))
