"""Options flow of one session: chain snapshot -> :mod:`portfolio_pipeline.quant.flow`
-> rows of ``option_chain_snapshots``, ``option_flow_metrics``, ``option_flow_strikes``
and ``option_flow_unusual``, plus the chain's data-quality counts.

``option_flow_metrics`` is long: one row per (metric, scope) with its unit. Metrics
(scope ``all`` unless stated): ``spot``; ``total_gex``, ``call_gex``, ``put_gex`` ($ per 1%
move); ``zero_gamma`` (index points, NULL when the sweep finds no sign change) and
``zero_gamma_distance`` (fraction of spot); per expiry (scope = the expiry) ``gex``,
``vanna`` ($ delta per vol point), ``charm`` ($ delta per day) and ``dealer_delta`` ($),
with their ``all`` totals; ``put_call_volume`` and ``put_call_oi`` per days-to-expiry
bucket and ``all``; for the next expiry (scope = that expiry) ``max_pain``,
``max_pain_distance`` and ``pin_1``..``pin_n`` (strike), ``pin_n_oi`` (contracts),
``pin_n_distance`` (fraction of spot); ``unusual_contracts`` (count).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from portfolio_pipeline.brokers.chain import ChainSnapshot
from portfolio_pipeline.config.flow import FlowConfig
from portfolio_pipeline.quant import flow
from portfolio_pipeline.quant._typing import Float64Array
from portfolio_pipeline.storage import dict_rows
from portfolio_pipeline.storage.tables import option_chain_snapshots, option_flow_metrics

Row = dict[str, Any]
ContractKey = tuple[str, str, date, float, str]
"""(underlying, trading class, expiry, strike, right)."""

USD_1PCT = "$ per 1% move"
UNITS: Mapping[str, str] = {
    "spot": "index points",
    "total_gex": USD_1PCT,
    "call_gex": USD_1PCT,
    "put_gex": USD_1PCT,
    "gex": USD_1PCT,
    "zero_gamma": "index points",
    "zero_gamma_distance": "fraction of spot",
    "vanna": "$ delta per vol point",
    "charm": "$ delta per day",
    "dealer_delta": "$",
    "put_call_volume": "ratio",
    "put_call_oi": "ratio",
    "max_pain": "strike",
    "max_pain_distance": "fraction of spot",
    "unusual_contracts": "contracts",
}


def _unit(metric: str) -> str:
    if metric.startswith("pin_"):
        return (
            "contracts"
            if metric.endswith("_oi")
            else "fraction of spot"
            if metric.endswith("_distance")
            else "strike"
        )
    return UNITS[metric]


def _dates(values: np.ndarray) -> list[date]:
    out: list[date] = values.astype("datetime64[D]").astype(object).tolist()
    return out


def contract_keys(snapshot: ChainSnapshot) -> list[ContractKey]:
    rights = np.where(snapshot.is_call, "C", "P").tolist()
    return list(
        zip(
            [snapshot.underlying] * snapshot.size,
            snapshot.trading_class.tolist(),
            _dates(snapshot.expiry),
            snapshot.strike.tolist(),
            rights,
            strict=True,
        )
    )


class VolumeHistory:
    """Each contract's volume over the last ``sessions`` snapshots (running sums), for the
    "volume far above the contract's average" test; sessions pushed in date order."""

    def __init__(self, sessions: int) -> None:
        self._n = sessions
        self._window: deque[dict[ContractKey, float]] = deque()
        self._sum: dict[ContractKey, float] = {}
        self._count: dict[ContractKey, int] = {}

    def push(self, volumes: Mapping[ContractKey, float]) -> None:
        self._window.append(dict(volumes))
        for k, v in volumes.items():
            self._sum[k] = self._sum.get(k, 0.0) + v
            self._count[k] = self._count.get(k, 0) + 1
        if len(self._window) > self._n:
            for k, v in self._window.popleft().items():
                self._sum[k] -= v
                self._count[k] -= 1
                if self._count[k] == 0:
                    del self._sum[k], self._count[k]

    def average(self, keys: Sequence[ContractKey]) -> Float64Array:
        """Average daily volume per key over the sessions it appeared in (NaN: none)."""
        return np.array(
            [self._sum[k] / self._count[k] if k in self._count else np.nan for k in keys]
        )


def load_volume_history(conn: Connection, before: date, sessions: int) -> VolumeHistory:
    """The stored chain volumes of the ``sessions`` snapshots before ``before``."""
    t = option_chain_snapshots
    days = [
        r[0]
        for r in conn.execute(
            select(t.c.session_date)
            .where(t.c.session_date < before)
            .distinct()
            .order_by(t.c.session_date.desc())
            .limit(sessions)
        )
    ]
    history = VolumeHistory(sessions)
    if not days:
        return history
    rows = conn.execute(
        select(
            t.c.session_date,
            t.c.underlying,
            t.c.trading_class,
            t.c.expiry,
            t.c.strike,
            t.c.right,
            t.c.volume,
        )
        .where(t.c.session_date.in_(days))
        .order_by(t.c.session_date)
    )
    by_day: dict[date, dict[ContractKey, float]] = {d: {} for d in sorted(days)}
    for r in rows:
        if r.volume is not None:
            by_day[r.session_date][(r.underlying, r.trading_class, r.expiry, r.strike, r.right)] = (
                r.volume
            )
    for d in sorted(by_day):
        history.push(by_day[d])
    return history


@dataclass(frozen=True, slots=True)
class ChainQuality:
    """Data-quality counts of one snapshot (contracts)."""

    contracts: int
    crossed: int
    """bid > ask (both present)."""
    zero_oi_traded: int
    """volume > 0 on zero open interest."""
    stale: int
    """quote older than the snapshot by more than the configured minutes."""


def chain_quality(snapshot: ChainSnapshot, stale_minutes: float) -> ChainQuality:
    bid, ask = snapshot.bid, snapshot.ask
    both = np.isfinite(bid) & np.isfinite(ask)
    crossed = int(np.count_nonzero(both & (bid > np.where(both, ask, np.inf))))
    zero_oi = int(
        np.count_nonzero((np.nan_to_num(snapshot.volume) > 0) & (snapshot.open_interest == 0))
    )
    age = snapshot.as_of.timestamp() - snapshot.quote_epoch
    stale = int(np.count_nonzero(np.isfinite(age) & (age > stale_minutes * 60.0)))
    return ChainQuality(snapshot.size, crossed, zero_oi, stale)


@dataclass(frozen=True, slots=True)
class FlowResult:
    """Table rows and headline numbers of one underlying at one session."""

    underlying: str
    simulated: bool
    chain: list[Row]
    metrics: list[Row]
    strikes: list[Row]
    unusual: list[Row]
    quality: ChainQuality
    headline: dict[str, float | str | None]


def _none(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _nan_list(values: np.ndarray) -> list[float | None]:
    out = values.astype(object)
    out[~np.isfinite(values)] = None
    result: list[float | None] = out.tolist()
    return result


def chain_rows(day: date, snapshot: ChainSnapshot) -> list[Row]:
    """``option_chain_snapshots`` rows (NaN -> NULL)."""
    n = snapshot.size
    epochs = snapshot.quote_epoch
    known = np.isfinite(epochs)
    if known.all() and np.all(epochs == epochs[0]):
        quote_time: list[datetime | None] = [datetime.fromtimestamp(float(epochs[0]), tz=UTC)] * n
    else:
        quote_time = [
            datetime.fromtimestamp(e, tz=UTC) if ok else None
            for e, ok in zip(epochs.tolist(), known.tolist(), strict=True)
        ]
    cols: dict[str, list[Any]] = {
        "trading_class": snapshot.trading_class.tolist(),
        "expiry": _dates(snapshot.expiry),
        "strike": snapshot.strike.tolist(),
        "right": np.where(snapshot.is_call, "C", "P").tolist(),
        **{
            name: _nan_list(getattr(snapshot, name))
            for name in (
                "bid",
                "ask",
                "last",
                "volume",
                "open_interest",
                "iv",
                "delta",
                "gamma",
                "vega",
                "theta",
            )
        },
        "quote_time": quote_time,
    }
    const = {
        "session_date": day,
        "underlying": snapshot.underlying,
        "as_of": snapshot.as_of,
        "source": snapshot.source,
    }
    names = list(cols)
    return (
        [
            {**const, **dict(zip(names, vals, strict=True))}
            for vals in zip(*cols.values(), strict=True)
        ]
        if n
        else []
    )


def analyse(
    day: date, snapshot: ChainSnapshot, cfg: FlowConfig, history: VolumeHistory | None = None
) -> FlowResult:
    """Every flow figure of one snapshot (module docstring), under ``cfg``'s positioning."""
    chain = snapshot.flow_chain()
    positioning = cfg.positioning
    exp = flow.exposures(chain, positioning)
    zg = flow.zero_gamma(
        chain,
        positioning,
        lower=cfg.zero_gamma.lower,
        upper=cfg.zero_gamma.upper,
        points=cfg.zero_gamma.points,
    )
    by_strike = flow.gex_by_strike(chain, exp)
    by_expiry = flow.exposure_by_expiry(chain, exp)
    pcr = flow.put_call_ratios(chain, tuple(cfg.put_call_buckets_days))
    pin = flow.pinning(chain, top=cfg.pinning_top)

    keys = contract_keys(snapshot)
    live = np.isfinite(snapshot.iv) & (snapshot.T > 0)
    live_keys = [k for k, keep in zip(keys, live.tolist(), strict=True) if keep]
    average = history.average(live_keys) if history is not None else None
    unusual = flow.unusual_activity(chain, average, cfg.unusual.thresholds())

    spot = snapshot.spot
    values: list[tuple[str, str, float | None]] = [
        ("spot", "all", spot),
        ("total_gex", "all", exp.total_gex),
        ("call_gex", "all", float(by_strike.call_gex.sum())),
        ("put_gex", "all", float(by_strike.put_gex.sum())),
        ("zero_gamma", "all", zg.level),
        ("zero_gamma_distance", "all", None if zg.level is None else zg.level / spot - 1.0),
        ("vanna", "all", float(exp.vanna.sum())),
        ("charm", "all", float(exp.charm.sum())),
        ("dealer_delta", "all", float(exp.dollar_delta.sum())),
        ("unusual_contracts", "all", float(unusual.index.size)),
    ]
    for e in by_expiry:
        scope = str(e.expiry)
        values += [
            ("gex", scope, e.gex),
            ("vanna", scope, e.vanna),
            ("charm", scope, e.charm),
            ("dealer_delta", scope, e.dollar_delta),
        ]
    for r in pcr:
        values += [
            ("put_call_volume", r.bucket, r.volume_ratio),
            ("put_call_oi", r.bucket, r.oi_ratio),
        ]
    if pin is not None:
        scope = str(pin.expiry)
        values += [
            ("max_pain", scope, pin.max_pain),
            ("max_pain_distance", scope, pin.max_pain_distance),
        ]
        for j, (k, oi, dist) in enumerate(
            zip(
                pin.strikes.tolist(), pin.open_interest.tolist(), pin.distance.tolist(), strict=True
            ),
            start=1,
        ):
            values += [
                (f"pin_{j}", scope, k),
                (f"pin_{j}_oi", scope, oi),
                (f"pin_{j}_distance", scope, dist),
            ]
    base = {
        "session_date": day,
        "underlying": snapshot.underlying,
        "positioning": positioning,
        "simulated": snapshot.simulated,
    }
    metrics = [
        {**base, "metric": m, "scope": s, "value": _none(v), "unit": _unit(m)} for m, s, v in values
    ]

    strikes = [
        {
            "session_date": day,
            "underlying": snapshot.underlying,
            "strike": k,
            "call_gex": cg,
            "put_gex": pg,
            "call_oi": co,
            "put_oi": po,
        }
        for k, cg, pg, co, po in zip(
            by_strike.strike.tolist(),
            by_strike.call_gex.tolist(),
            by_strike.put_gex.tolist(),
            by_strike.call_oi.tolist(),
            by_strike.put_oi.tolist(),
            strict=True,
        )
    ]
    unusual_rows: list[Row] = []
    for j, i in enumerate(unusual.index.tolist()):
        und, tc, expiry, strike, right = live_keys[i]
        avg = None if average is None else _none(float(average[i]))
        unusual_rows.append(
            {
                "session_date": day,
                "underlying": und,
                "trading_class": tc,
                "expiry": expiry,
                "strike": strike,
                "right": right,
                "volume": float(chain.volume[i]),
                "open_interest": float(chain.open_interest[i]),
                "average_volume": avg,
                "reasons": ",".join(unusual.reason_names(j)),
            }
        )
    if history is not None:
        history.push(dict(zip(keys, np.nan_to_num(snapshot.volume).tolist(), strict=True)))
    pc_all = pcr[-1]
    headline: dict[str, float | str | None] = {
        "spot": spot,
        "total_gex": exp.total_gex,
        "zero_gamma": zg.level,
        "vanna": float(exp.vanna.sum()),
        "charm": float(exp.charm.sum()),
        "put_call_oi": pc_all.oi_ratio,
        "put_call_volume": pc_all.volume_ratio,
        "max_pain": None if pin is None else pin.max_pain,
        "next_expiry": None if pin is None else str(pin.expiry),
        "pin_1": None if pin is None or pin.strikes.size == 0 else float(pin.strikes[0]),
        "unusual": float(unusual.index.size),
        "contracts": float(snapshot.size),
    }
    return FlowResult(
        snapshot.underlying,
        snapshot.simulated,
        chain_rows(day, snapshot),
        metrics,
        strikes,
        unusual_rows,
        chain_quality(snapshot, cfg.checks.stale_quote_minutes),
        headline,
    )


def read_flow_metrics(conn: Connection, day: date) -> list[Row]:
    """The stored ``option_flow_metrics`` rows of a session (for the risk pack)."""
    t = option_flow_metrics
    rows = conn.execute(
        select(t).where(t.c.session_date == day).order_by(t.c.underlying, t.c.metric, t.c.scope)
    )
    return dict_rows(rows)


def headline_table(results: Iterable[FlowResult]) -> str:
    """Markdown table of the headline numbers per underlying (labelled simulated)."""
    lines = [
        "| underlying | spot | GEX ($ per 1%) | zero gamma | vanna ($/vol pt) | charm ($/day) | "
        "P/C OI | P/C volume | max pain | next expiry | unusual |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]

    def f(x: Any, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt) if not isinstance(x, str) else x

    for r in results:
        h = r.headline
        name = f"{r.underlying} (simulated)" if r.simulated else r.underlying
        lines.append(
            f"| {name} | {f(h['spot'], ',.2f')} | {f(h['total_gex'], ',.0f')} | {f(h['zero_gamma'], ',.1f')} | "
            f"{f(h['vanna'], ',.0f')} | {f(h['charm'], ',.0f')} | {f(h['put_call_oi'], '.2f')} | "
            f"{f(h['put_call_volume'], '.2f')} | {f(h['max_pain'], ',.0f')} | {f(h['next_expiry'], '')} | "
            f"{f(h['unusual'], '.0f')} |"
        )
    return "\n".join(lines)
