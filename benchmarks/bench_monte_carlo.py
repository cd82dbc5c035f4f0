"""Monte Carlo full-revaluation benchmark (run: .venv/bin/python benchmarks/bench_monte_carlo.py).

10,000 joint scenarios x 500 positions on 5 underlyings (4 accounts), full revaluation of
every position in every scenario + VaR/CVaR 95/99, with
``portfolio_pipeline.quant.scenarios.revalue`` (unique contracts, chunked, units matrix
product) next to a straightforward numpy implementation (every position priced with the
textbook BSM formula and ``scipy.stats.norm.cdf`` on the full scenarios x positions
array) in the same run: wall time (best of 3), peak traced memory (tracemalloc), the
ratio, agreement of the VaR, and the VaR change float32 would cause.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.stats import norm

from portfolio_pipeline.quant import risk_metrics
from portfolio_pipeline.quant.scenarios import Book, ContractSet, ScenarioSet, revalue

N_SCEN = 10_000
N_POS = 500
SPOTS = np.array([2700.0, 6800.0, 1500.0, 270.0, 160.0])
LEVELS = (0.95, 0.99)


def make_book(seed: int = 0) -> tuple[Book, dict[str, Any]]:
    """500 positions on a chain of 5 underlyings x 12 strikes x 2 rights x 3 expiries
    (plus stock), drawn at random for 4 accounts; many positions share a contract."""
    rng = np.random.default_rng(seed)
    chain = []
    for u, s in enumerate(SPOTS):
        for m in np.linspace(0.8, 1.15, 12):
            for call in (False, True):
                for t in (7, 30, 90):
                    chain.append((u, True, call, s, round(s * m), t / 365, 0.12 + 0.3 * abs(1 - m)))
        chain.append((u, False, False, s, 1.0, 0.0, 0.0))
    pick = rng.integers(0, len(chain), N_POS)
    qty = rng.integers(1, 20, N_POS) * rng.choice([-1, 1], N_POS)
    mult = np.where([chain[i][1] for i in pick], 100.0, 1.0)
    account = rng.integers(0, 4, N_POS)
    uniq, inv = np.unique(pick, return_inverse=True)
    cols = list(zip(*(chain[i] for i in uniq), strict=True))
    cs = ContractSet.build(factor=cols[0], is_option=cols[1], is_call=cols[2], black76=False,
                           spot=cols[3], strike=cols[4], T=cols[5], r=0.02, q=0.01, vol=cols[6])
    units = np.zeros((uniq.size, 4))
    np.add.at(units, (inv, account), qty * mult)
    positions = {k: np.array([chain[i][j] for i in pick]) for j, k in
                 enumerate(("factor", "opt", "call", "spot", "strike", "T", "vol"))}
    positions["units"] = qty * mult
    return Book(cs, units, ("a", "b", "c", "d"), tuple(f"u{i}" for i in range(5))), positions


def make_scenarios(seed: int = 1) -> ScenarioSet:
    rng = np.random.default_rng(seed)
    corr = np.full((6, 6), 0.8)
    np.fill_diagonal(corr, 1.0)
    corr[5, :5] = corr[:5, 5] = -0.7  # the vol factor
    z = rng.standard_normal((N_SCEN, 6)) @ np.linalg.cholesky(corr).T
    x = z[:, :5] * 0.012 * np.sqrt(1.0)
    d_atm = np.repeat(z[:, 5:] * 0.02, 5, axis=1)
    return ScenarioSet.build(x, d_atm, 1 / 252)


def risk(pnl: np.ndarray) -> dict[str, float]:
    out = {}
    for lv in LEVELS:
        out[f"var_{lv}"] = risk_metrics.var(pnl, lv)
        out[f"cvar_{lv}"] = risk_metrics.cvar(pnl, lv)
    return out


def engine(book: Book, sc: ScenarioSet) -> dict[str, float]:
    return risk(revalue(book, sc).sum(axis=1))


def naive(pos: dict[str, Any], sc: ScenarioSet, dtype: Any = np.float64) -> dict[str, float]:
    """Every position priced in every scenario, textbook formulas, one big array."""
    f, opt, call = pos["factor"].astype(int), pos["opt"].astype(bool), pos["call"].astype(bool)
    K, vol0 = pos["strike"].astype(dtype), pos["vol"].astype(dtype)
    T0 = pos["T"].astype(dtype)
    S0 = pos["spot"].astype(dtype)
    r, q = dtype(0.02), dtype(0.01)

    def bsm(S: np.ndarray, T: np.ndarray, v: np.ndarray) -> np.ndarray:
        d1 = (np.log(S / K) + (r - q + 0.5 * v**2) * T) / (v * np.sqrt(T))
        d2 = d1 - v * np.sqrt(T)
        c = S * np.exp(-q * T) * norm.cdf(d1) - K * np.exp(-r * T) * norm.cdf(d2)
        p = K * np.exp(-r * T) * norm.cdf(-d2) - S * np.exp(-q * T) * norm.cdf(-d1)
        return np.where(opt, np.where(call, c, p), S)

    with np.errstate(all="ignore"):
        v0 = bsm(S0, T0, vol0)
        S = S0 * np.exp(sc.log_ret[:, f].astype(dtype))
        T1 = np.maximum(T0 - dtype(sc.decay[0]), dtype(1e-9))
        v1 = bsm(S, T1, np.maximum(vol0 + sc.d_atm[:, f].astype(dtype), dtype(0.01)))
    pnl = ((v1 - v0) * pos["units"].astype(dtype)).sum(axis=1, dtype=np.float64)
    return risk(pnl)


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return best, peak, out


def main() -> None:
    book, pos = make_book()
    sc = make_scenarios()
    print(f"{N_SCEN} scenarios x {N_POS} positions ({book.contracts.size} unique contracts, "
          f"5 underlyings, 4 accounts); full revaluation + VaR/CVaR 95/99, float64")
    t_e, m_e, r_e = timed(lambda: engine(book, sc))
    t_n, m_n, r_n = timed(lambda: naive(pos, sc))
    print(f"{'implementation':<44}{'time s':>9}{'peak MiB':>10}{'VaR99':>14}{'CVaR99':>14}")
    print(f"{'quant.scenarios.revalue (unique, chunked)':<44}{t_e:>9.3f}{m_e:>10.1f}"
          f"{r_e['var_0.99']:>14,.0f}{r_e['cvar_0.99']:>14,.0f}")
    print(f"{'straightforward numpy (per position)':<44}{t_n:>9.3f}{m_n:>10.1f}"
          f"{r_n['var_0.99']:>14,.0f}{r_n['cvar_0.99']:>14,.0f}")
    print(f"speed-up {t_n / t_e:.1f}x, memory ratio {m_n / max(m_e, 1e-9):.1f}x; goal < 1 s and "
          f"< 2048 MiB: {'met' if t_e < 1.0 and m_e < 2048 else 'NOT met'}")
    worst = max(abs(r_e[k] / r_n[k] - 1.0) for k in r_e)
    print(f"max relative difference engine vs straightforward (VaR/CVaR): {worst:.2e}")
    r_32 = naive(pos, sc, np.float32)
    d32 = max(abs(r_32[k] / r_n[k] - 1.0) for k in r_n)
    print(f"float32 (straightforward implementation) changes VaR/CVaR by up to {d32:.4%} "
          f"({'< 0.1%' if d32 < 1e-3 else '>= 0.1%'}); the engine stays float64: it already meets "
          "the goal and keeps today's cell exactly 0")


if __name__ == "__main__":
    main()
