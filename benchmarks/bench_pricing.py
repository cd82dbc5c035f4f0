"""Throughput benchmark of portfolio_pipeline.quant.pricing (run: .venv/bin/python benchmarks/bench_pricing.py).

Prints options/second for price + all Greeks on 1,000,000 mixed contracts and for
implied_vol on 1,000,000 prices, next to (a) a straightforward numpy/scipy BSM,
(b) py_vollib_vectorized if installed and (c) a QuantLib loop on a 10,000 subset,
with ratios, accuracy and peak traced memory.
"""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.stats import norm

from portfolio_pipeline.quant import pricing as P

N = 1_000_000
N_QL = 10_000


def contracts(n: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    s = rng.uniform(20.0, 200.0, n)
    return {
        "ic": rng.random(n) < 0.5,
        "S": s,
        "K": s * np.exp(rng.normal(0.0, 0.25, n)),
        "T": rng.integers(1, 1096, n) / 365.0,
        "r": rng.uniform(0.0, 0.08, n),
        "q": rng.uniform(0.0, 0.04, n),
        "vol": rng.uniform(0.05, 1.0, n),
    }


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, float, Any]:
    """Best wall time of `repeat` runs and peak traced memory (MiB) of one run."""
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return best, peak, out


def naive_greeks(c: dict[str, Any]) -> dict[str, Any]:
    """Straightforward textbook BSM with norm.cdf / norm.pdf, terms recomputed."""
    S, K, T, r, q, v = c["S"], c["K"], c["T"], c["r"], c["q"], c["vol"]
    call = c["ic"]
    d1 = (np.log(S / K) + (r - q + 0.5 * v**2) * T) / (v * np.sqrt(T))
    d2 = d1 - v * np.sqrt(T)
    price = np.where(
        call,
        S * np.exp(-q * T) * norm.cdf(d1) - K * np.exp(-r * T) * norm.cdf(d2),
        K * np.exp(-r * T) * norm.cdf(-d2) - S * np.exp(-q * T) * norm.cdf(-d1),
    )
    delta = np.where(call, np.exp(-q * T) * norm.cdf(d1), -np.exp(-q * T) * norm.cdf(-d1))
    gamma = np.exp(-q * T) * norm.pdf(d1) / (S * v * np.sqrt(T))
    vega = S * np.exp(-q * T) * norm.pdf(d1) * np.sqrt(T) / 100
    theta = (
        -S * np.exp(-q * T) * norm.pdf(d1) * v / (2 * np.sqrt(T))
        + np.where(
            call,
            -r * K * np.exp(-r * T) * norm.cdf(d2) + q * S * np.exp(-q * T) * norm.cdf(d1),
            r * K * np.exp(-r * T) * norm.cdf(-d2) - q * S * np.exp(-q * T) * norm.cdf(-d1),
        )
    ) / 365
    rho = (
        np.where(
            call, K * T * np.exp(-r * T) * norm.cdf(d2), -K * T * np.exp(-r * T) * norm.cdf(-d2)
        )
        / 100
    )
    vanna = -np.exp(-q * T) * norm.pdf(d1) * d2 / v / 100
    volga = S * np.exp(-q * T) * norm.pdf(d1) * np.sqrt(T) * d1 * d2 / v / 1e4
    charm = (
        np.where(call, q * np.exp(-q * T) * norm.cdf(d1), -q * np.exp(-q * T) * norm.cdf(-d1))
        - np.exp(-q * T)
        * norm.pdf(d1)
        * (2 * (r - q) * T - d2 * v * np.sqrt(T))
        / (2 * T * v * np.sqrt(T))
    ) / 365
    return {
        "price": price,
        "delta": delta,
        "gamma": gamma,
        "vega": vega,
        "theta": theta,
        "rho": rho,
        "vanna": vanna,
        "volga": volga,
        "charm": charm,
    }


def naive_iv(px: Any, c: dict[str, Any], iters: int = 40) -> Any:
    """Straightforward vectorised Newton from vol = 0.5 with norm.cdf / norm.pdf."""
    v = np.full(px.shape, 0.5)
    S, K, T, r, q, call = c["S"], c["K"], c["T"], c["r"], c["q"], c["ic"]
    for _ in range(iters):
        d1 = (np.log(S / K) + (r - q + 0.5 * v**2) * T) / (v * np.sqrt(T))
        d2 = d1 - v * np.sqrt(T)
        model = np.where(
            call,
            S * np.exp(-q * T) * norm.cdf(d1) - K * np.exp(-r * T) * norm.cdf(d2),
            K * np.exp(-r * T) * norm.cdf(-d2) - S * np.exp(-q * T) * norm.cdf(-d1),
        )
        vega = S * np.exp(-q * T) * norm.pdf(d1) * np.sqrt(T)
        v = np.clip(v - (model - px) / np.maximum(vega, 1e-12), 1e-4, 5.0)
    return v


def ql_loop(c: dict[str, Any], px: Any) -> tuple[float, float]:
    import QuantLib as ql

    today = ql.Date(15, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    s_q, r_q, q_q, v_q = (ql.SimpleQuote(x) for x in (100.0, 0.0, 0.0, 0.2))
    proc = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(s_q),
        ql.YieldTermStructureHandle(ql.FlatForward(today, ql.QuoteHandle(q_q), dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, ql.QuoteHandle(r_q), dc)),
        ql.BlackVolTermStructureHandle(
            ql.BlackConstantVol(today, ql.NullCalendar(), ql.QuoteHandle(v_q), dc)
        ),
    )
    eng = ql.AnalyticEuropeanEngine(proc)
    opts = []
    for i in range(N_QL):
        kind = ql.Option.Call if c["ic"][i] else ql.Option.Put
        o = ql.VanillaOption(
            ql.PlainVanillaPayoff(kind, float(c["K"][i])),
            ql.EuropeanExercise(today + round(c["T"][i] * 365)),
        )
        o.setPricingEngine(eng)
        opts.append(o)
    t0 = time.perf_counter()
    for i, o in enumerate(opts):
        s_q.setValue(c["S"][i])
        r_q.setValue(c["r"][i])
        q_q.setValue(c["q"][i])
        v_q.setValue(c["vol"][i])
        o.NPV(), o.delta(), o.gamma(), o.vega(), o.theta(), o.rho()
    t_greeks = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, o in enumerate(opts):
        s_q.setValue(c["S"][i])
        r_q.setValue(c["r"][i])
        q_q.setValue(c["q"][i])
        with contextlib.suppress(RuntimeError):
            o.impliedVolatility(float(px[i]), proc, 1e-12, 200, 1e-7, 10.0)
    return t_greeks, time.perf_counter() - t0


def main() -> None:
    import numpy
    import scipy

    print(f"numpy {numpy.__version__}, scipy {scipy.__version__}, N = {N:,} mixed contracts")
    c = contracts(N)
    args = (c["ic"], c["S"], c["K"], c["T"], c["r"], c["q"], c["vol"])
    rows: list[tuple[str, str, float, float, str]] = []

    t_g, m_g, g = timed(lambda: P.greeks(*args))
    rows.append(("greeks", "portfolio_pipeline", t_g, m_g, "-"))
    t_p, m_p, _ = timed(lambda: P.price(*args))
    rows.append(("price only", "portfolio_pipeline", t_p, m_p, "-"))
    t_n, m_n, ng = timed(lambda: naive_greeks(c), repeat=2)
    dev = max(float(np.max(np.abs(ng[f] - getattr(g, f)))) for f in ng)
    rows.append(("greeks", "naive numpy/scipy", t_n, m_n, f"max |diff| {dev:.1e}"))

    px = g.price
    t_iv, m_iv, iv = timed(lambda: P.implied_vol(px, c["ic"], *args[1:6]))
    vegapp = g.vega
    msk = vegapp > 1e-8
    err_ours = float(np.nanmax(np.abs(iv - c["vol"])[msk]))
    rows.append(("implied_vol", "portfolio_pipeline", t_iv, m_iv, f"max err {err_ours:.1e}"))
    t_niv, m_niv, niv = timed(lambda: naive_iv(px, c), repeat=1)
    err_n = float(np.nanmax(np.abs(niv - c["vol"])[msk]))
    rows.append(("implied_vol", "naive Newton (40 it)", t_niv, m_niv, f"max err {err_n:.1e}"))

    try:
        from importlib.metadata import version

        import py_vollib_vectorized as pvv

        flag = np.where(c["ic"], "c", "p")
        small = {k: v[:100] for k, v in c.items()}
        sflag = flag[:100]
        pvv.get_all_greeks(
            sflag,
            small["S"],
            small["K"],
            small["T"],
            small["r"],
            small["vol"],
            small["q"],
            model="black_scholes_merton",
            return_as="dict",
        )
        pvv.vectorized_implied_volatility(
            px[:100],
            small["S"],
            small["K"],
            small["T"],
            small["r"],
            sflag,
            q=small["q"],
            model="black_scholes_merton",
            return_as="numpy",
        )
        t_v, m_v, _vg = timed(
            lambda: pvv.get_all_greeks(
                flag,
                c["S"],
                c["K"],
                c["T"],
                c["r"],
                c["vol"],
                c["q"],
                model="black_scholes_merton",
                return_as="dict",
            ),
            repeat=2,
        )
        rows.append(
            (
                "greeks*",
                f"py_vollib_vectorized {version('py_vollib_vectorized')}",
                t_v,
                m_v,
                "* delta,gamma,vega,theta,rho only",
            )
        )
        t_viv, m_viv, viv = timed(
            lambda: pvv.vectorized_implied_volatility(
                px,
                c["S"],
                c["K"],
                c["T"],
                c["r"],
                flag,
                q=c["q"],
                model="black_scholes_merton",
                return_as="numpy",
            ),
            repeat=2,
        )
        err_v = float(np.nanmax(np.abs(np.asarray(viv).reshape(-1) - c["vol"])[msk]))
        rows.append(("implied_vol", "py_vollib_vectorized", t_viv, m_viv, f"max err {err_v:.1e}"))
    except ImportError:
        print("py_vollib_vectorized: NOT INSTALLED (skipped)")
    except Exception as exc:  # numba typing errors surface as various exception types
        print(f"py_vollib_vectorized: installed but FAILED to run ({type(exc).__name__}); skipped")

    t_ql, t_qliv = ql_loop(c, px)
    rows.append(
        ("greeks", f"QuantLib loop ({N_QL:,})", t_ql * N / N_QL, float("nan"), "extrapolated")
    )
    rows.append(
        (
            "implied_vol",
            f"QuantLib loop ({N_QL:,})",
            t_qliv * N / N_QL,
            float("nan"),
            "extrapolated",
        )
    )

    base = {"greeks": t_g, "greeks*": t_g, "price only": t_p, "implied_vol": t_iv}
    print(f"{'task':<12} {'implementation':<34} {'opts/s':>12} {'ours x':>7} {'peak MiB':>9}  note")
    for task, impl, t, mem, note in rows:
        ratio = t / base[task]
        print(f"{task:<12} {impl:<34} {N / t:>12,.0f} {ratio:>7.2f} {mem:>9.1f}  {note}")
    print("('ours x' = how many times faster portfolio_pipeline is than that row)")


if __name__ == "__main__":
    main()
