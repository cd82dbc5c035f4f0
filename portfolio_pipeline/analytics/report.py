"""The daily HTML report: self-contained (inline SVG charts, inline CSS, no network)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import date
from typing import Any

import pandas as pd

_W, _H, _PAD = 640, 180, 36


def _fmt(value: Any, digits: int = 0) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    if not math.isfinite(number):
        return "–"
    return f"{number:,.{digits}f}"


def line_chart(x: Sequence[date], y: Sequence[float], *, title: str, color: str = "#1f77b4") -> str:
    """A small SVG line chart (empty note when there is nothing to plot)."""
    pts = [(d, float(v)) for d, v in zip(x, y, strict=True) if v is not None and math.isfinite(float(v))]
    if len(pts) < 2:
        return f"<p><em>{html.escape(title)}: not enough history yet</em></p>"
    lo = min(v for _, v in pts)
    hi = max(v for _, v in pts)
    span = hi - lo or 1.0
    n = len(pts) - 1
    coords = " ".join(
        f"{_PAD + i * (_W - 2 * _PAD) / n:.1f},{_H - _PAD - (v - lo) / span * (_H - 2 * _PAD):.1f}"
        for i, (_, v) in enumerate(pts)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" role="img" '
        f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>'
        f'<text x="{_PAD}" y="16" font-size="12">{html.escape(title)}</text>'
        f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>'
        f'<text x="2" y="{_PAD}" font-size="10">{_fmt(hi, 2)}</text>'
        f'<text x="2" y="{_H - _PAD}" font-size="10">{_fmt(lo, 2)}</text>'
        f'<text x="{_PAD}" y="{_H - 8}" font-size="10">{pts[0][0]}</text>'
        f'<text x="{_W - _PAD - 60}" y="{_H - 8}" font-size="10">{pts[-1][0]}</text></svg>'
    )


def bar_chart(labels: Sequence[str], values: Sequence[float], *, title: str) -> str:
    """Horizontal SVG bars, green for gains and red for losses."""
    vals = [float(v) if v is not None and math.isfinite(float(v)) else 0.0 for v in values]
    if not vals:
        return f"<p><em>{html.escape(title)}: no data</em></p>"
    top = max(abs(v) for v in vals) or 1.0
    row_h, label_w = 20, 110
    height = 24 + row_h * len(vals)
    mid = label_w + (_W - label_w) / 2
    half = (_W - label_w) / 2 - 70
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>'
             f'<text x="0" y="14" font-size="12">{html.escape(title)}</text>'
             f'<line x1="{mid}" y1="18" x2="{mid}" y2="{height}" stroke="#999"/>']
    for i, (label, v) in enumerate(zip(labels, vals, strict=True)):
        y = 22 + i * row_h
        w = abs(v) / top * half
        x = mid if v >= 0 else mid - w
        color = "#2ca02c" if v >= 0 else "#d62728"
        parts.append(f'<text x="0" y="{y + 12}" font-size="11">{html.escape(label)}</text>'
                     f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 6}" fill="{color}"/>'
                     f'<text x="{mid + (half + 8 if v >= 0 else -half - 66):.1f}" y="{y + 12}" '
                     f'font-size="11">{_fmt(v)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def table(frame: pd.DataFrame, columns: Sequence[str], *, digits: int = 0) -> str:
    if frame.empty:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(row[c], digits) if c not in ('broker', 'account_id', 'underlying', 'metric', 'regime') else html.escape(str(row[c]))}</td>" for c in columns) + "</tr>"
        for row in frame.to_dict("records")
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def var_exceedance_flag(session: date, exceedances: pd.DataFrame | None) -> str:
    """A warning paragraph naming each VaR model and level the session's loss exceeded."""
    if exceedances is None or exceedances.empty:
        return ""
    hit = exceedances[(exceedances["session_date"] == session) & exceedances["exceeded"].astype(bool)]
    if hit.empty:
        return ""
    hit = hit.sort_values(["level", "model"], ascending=[False, True])
    items = ", ".join(f"{html.escape(str(r['model']))} VaR{round(100 * float(r['level']))} "
                      f"{_fmt(r['var_usd'])}" for r in hit.to_dict("records"))
    pnl = float(hit.iloc[0]["pnl_usd"])
    return (f"<p class='var-exceeded' style='color:#d62728'><b>VaR exceeded</b>: day P&amp;L "
            f"{_fmt(pnl)} against {items} (previous close)</p>")


def render_report(
    session: date,
    *,
    returns: pd.DataFrame,
    greeks: pd.DataFrame,
    attribution: pd.DataFrame,
    risk: pd.DataFrame,
    margin: pd.DataFrame,
    limits: pd.DataFrame,
    exceedances: pd.DataFrame | None = None,
) -> str:
    """The report of ``session`` (frames hold the book rows, '*', with history where charted).

    ``exceedances``: the session's ``var_exceedances`` rows; those with ``exceeded`` are
    flagged at the top (the session's loss exceeded the previous close's VaR)."""
    ret = returns.sort_values("session_date")
    att = attribution.sort_values("session_date")
    last_att = att[att["session_date"] == session]
    var = risk[(risk["window"] == "full") & (risk["metric"] == "var_99_historical")].sort_values("session_date")
    regime = margin.iloc[0] if not margin.empty else None
    comps = ["delta_pnl", "gamma_pnl", "theta_pnl", "vega_pnl", "vanna_pnl", "volga_pnl", "unexplained"]
    head = ""
    if not ret.empty:
        today = ret.iloc[-1]
        head = (f"<p>NLV <b>{_fmt(today['nlv'])}</b> · day P&amp;L {_fmt(today['pnl'])} "
                f"({_fmt(100 * float(today['twr']), 2)}%) · drawdown {_fmt(100 * float(today['drawdown']), 2)}%</p>")
    if regime is not None:
        head += (f"<p>Regime <b>{html.escape(str(regime['regime']))}</b> · VIX {_fmt(regime['vix'], 2)} · "
                 f"VIX3M {_fmt(regime['vix3m'], 2)} · margin utilisation "
                 f"{_fmt(100 * float(regime['margin_utilisation']), 1)}% · breaches {int(regime['breaches'])}</p>")
    head += var_exceedance_flag(session, exceedances)
    sections = [
        "<h2>NLV and drawdown</h2>",
        line_chart(list(ret["session_date"]), list(ret["nlv"]), title="NLV"),
        line_chart(list(ret["session_date"]), list(100 * ret["drawdown"].astype("float64")),
                   title="Drawdown (%)", color="#d62728"),
        "<h2>Greeks</h2>",
        table(greeks, ["underlying", "positions", "beta_weighted_dollar_delta", "dollar_gamma_1pct",
                       "theta_per_day", "vega_per_point", "market_value"]),
        "<h2>P&amp;L attribution</h2>",
        bar_chart(comps, [float(last_att.iloc[0][c]) for c in comps] if not last_att.empty else [],
                  title=f"Attribution {session}"),
        "<h2>VaR history (99%, historical, $)</h2>",
        line_chart(list(var["session_date"]), list(var["value_usd"]), title="VaR 99% ($)", color="#9467bd"),
        "<h2>Limits</h2>",
        table(limits, ["metric", "value", "limit_value", "utilisation", "regime"], digits=4),
    ]
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Daily report {session}</title><style>body{{font-family:sans-serif;max-width:720px;"
        "margin:auto} table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:2px 6px;"
        "text-align:right}</style></head><body>"
        f"<h1>Daily report {session}</h1>{head}{''.join(sections)}</body></html>"
    )
