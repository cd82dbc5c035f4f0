"""Regenerate ``risk_reference.json``: reference values for ``test_risk_metrics.py``.

Independent oracles (NOT test dependencies; run this script by hand in a throwaway venv):

    python -m venv /tmp/qsref && /tmp/qsref/bin/pip install numpy==2.4.6 scipy==1.17.1 \
        pandas==3.1.1 quantstats==0.0.86 empyrical-reloaded==0.7.1
    /tmp/qsref/bin/python portfolio_pipeline_tests/quant/reference/gen_risk_reference.py

(``empyrical`` 0.5.5 itself no longer runs on numpy 2: ``np.NINF``; ``empyrical-reloaded``
is its maintained fork with the same formulas.)

The return series are generated here from fixed seeds and stored in the JSON with full
float precision, so the tests never depend on numpy's random streams.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import empyrical as ep
import numpy as np
import pandas as pd
import quantstats as qs

OUT = Path(__file__).with_name("risk_reference.json")
LEVELS = (0.95, 0.99)


def _series() -> dict[str, tuple[np.ndarray, int, str]]:
    """name -> (returns, periods per year, pandas frequency for the date index)."""
    rng = np.random.default_rng(20240611)
    normal_daily = rng.normal(0.0004, 0.011, 504)

    t_crash = -0.0002 + 0.012 * rng.standard_t(4, 756) / np.sqrt(2.0)
    t_crash[300:306] = [-0.081, -0.047, 0.035, -0.062, -0.028, 0.019]  # a crash ...
    t_crash[306:420] += 0.0025  # ... and a (partial) recovery drift

    skewed_monthly = 0.009 + 0.035 * rng.standard_normal(120)
    jumps = rng.random(120) < 0.06
    skewed_monthly[jumps] -= rng.exponential(0.09, jumps.sum())

    short_weekly = rng.normal(0.002, 0.025, 60)
    return {
        "normal_daily": (normal_daily, 252, "B"),
        "student_t_crash": (t_crash, 252, "B"),
        "skewed_monthly": (skewed_monthly, 12, "ME"),
        "short_weekly": (short_weekly, 52, "W-FRI"),
    }


def _f(x: Any) -> float:
    return float(x)


def _quantstats(s: pd.Series, periods: int) -> dict[str, float]:
    st = qs.stats
    out = {
        "sharpe": _f(st.sharpe(s, rf=0.0, periods=periods)),
        "sharpe_rf3": _f(st.sharpe(s, rf=0.03, periods=periods)),
        "sortino": _f(st.sortino(s, rf=0.0, periods=periods)),
        "sortino_rf3": _f(st.sortino(s, rf=0.03, periods=periods)),
        "omega": _f(st.omega(s, rf=0.0, required_return=0.0, periods=periods)),
        "omega_thr5": _f(st.omega(s, rf=0.0, required_return=0.05, periods=periods)),
        "max_drawdown": _f(st.max_drawdown(s)),
        "calmar": _f(st.calmar(s, periods=periods)),
    }
    for lv in LEVELS:
        tag = f"{round(lv * 100)}"
        # quantstats reports VaR / CVaR as (negative) returns: negate to our loss convention
        out[f"var_parametric_{tag}"] = -_f(st.value_at_risk(s, confidence=lv))
        out[f"cvar_parametric_{tag}"] = -_f(st.cvar(s, confidence=lv, method="parametric"))
        out[f"cvar_historical_{tag}"] = -_f(st.cvar(s, confidence=lv, method="historical"))
    return out


def _empyrical(r: np.ndarray, periods: int) -> dict[str, float]:
    out = {
        "sharpe": _f(ep.sharpe_ratio(r, risk_free=0.0, annualization=periods)),
        "sortino": _f(ep.sortino_ratio(r, required_return=0.0, annualization=periods)),
        "omega": _f(ep.omega_ratio(r, required_return=0.0, annualization=periods)),
        "omega_thr5": _f(ep.omega_ratio(r, required_return=0.05, annualization=periods)),
        "max_drawdown": _f(ep.max_drawdown(r)),
        "calmar": _f(ep.calmar_ratio(r, annualization=periods)),
    }
    for lv in LEVELS:
        tag = f"{round(lv * 100)}"
        out[f"var_historical_{tag}"] = -_f(ep.value_at_risk(r, cutoff=1.0 - lv))
        out[f"cvar_historical_{tag}"] = -_f(ep.conditional_value_at_risk(r, cutoff=1.0 - lv))
    return out


def _nan_to_none(a: pd.Series) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in a.to_numpy()]


def main() -> None:
    series: dict[str, Any] = {}
    rolling: dict[str, Any] = {}
    for name, (r, periods, freq) in _series().items():
        s = pd.Series(r, index=pd.date_range("2020-01-03", periods=r.size, freq=freq))
        series[name] = {
            "periods": periods,
            "returns": [float(v) for v in r],
            "quantstats": _quantstats(s, periods),
            "empyrical": _empyrical(r, periods),
        }
        if name == "normal_daily":
            rolling[name] = {
                "window": 63,
                # quantstats.stats.rolling_sharpe (pandas rolling mean / rolling std)
                "sharpe": _nan_to_none(
                    qs.stats.rolling_sharpe(s, rolling_period=63, periods_per_year=252)
                ),
                # pandas rolling quantile (linear interpolation), negated
                "var_historical_99": _nan_to_none(-s.rolling(63).quantile(0.01)),
            }
    doc = {
        "generated_by": "portfolio_pipeline_tests/quant/reference/gen_risk_reference.py",
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "quantstats": qs.__version__,
            "empyrical-reloaded": getattr(ep, "__version__", "unknown"),
        },
        "conventions": "VaR/CVaR as positive loss fractions; ratios annualised with periods",
        "series": series,
        "rolling": rolling,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
