"""Throughput benchmark of portfolio_pipeline.quant.pricing (run: .venv/bin/python benchmarks/bench_pricing.py).

Everything is measured in this one process, interleaved, as the median of several
repeats (the machine is shared), and printed as ratios "ours x" = baseline time / our time.

Baselines, and why each is the strongest straightforward one:

* Greeks / price: a textbook numpy BSM written the way a competent user would write it:
  ``scipy.special.ndtr`` for N(.) (about 5x faster than ``scipy.stats.norm.cdf``, which
  would flatter every ratio), ``exp(-d1^2/2)/sqrt(2 pi)`` for n(.), the shared terms
  (d1, d2, e^{-qT}, e^{-rT}, n(d1), N(w d1), N(w d2)) computed once, whole-array numpy
  expressions, kinds parsed with one ``kind == "call"`` comparison.  Same outputs as ours
  (price + 8 Greeks, project units), same inputs (1e6 mixed contracts).
* QuantLib: ``BlackCalculator`` in a Python loop (about 35k options/s here), not a full
  pricing engine per option (about 500/s); on a 10,000 subset, extrapolated.
* Implied vol: py_vollib_vectorized (Peter Jaeckel's "Let's be rational", numba-compiled),
  the reference open-source vectorised implementation; it must run (install it with
  ``.venv/bin/pip install -r benchmarks/requirements-peers.txt -c constraints.txt``).

Our rows are the public API as users call it (``pricing.greeks`` with kinds as strings or
booleans, ``pricing.implied_vol``).  Large inputs run on a thread pool (one thread per
CPU); the "serial" rows force one thread, to show what the kernel itself does.
"""

from __future__ import annotations

import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import ndtr

from portfolio_pipeline.quant import pricing as P

N = 1_000_000
N_QL = 10_000
REPEAT = 9
EPS = float(np.finfo(float).eps)


def contracts(n: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    s = rng.uniform(20.0, 200.0, n)
    ic = rng.random(n) < 0.5
    return {
        "ic": ic,
        "kind_str": np.where(ic, "call", "put"),  # numpy str array
        "kind_obj": np.where(ic, "call", "put").astype(object),  # e.g. from pandas
        "S": s,
        "K": s * np.exp(rng.normal(0.0, 0.25, n)),
        "T": rng.integers(1, 1096, n) / 365.0,
        "r": rng.uniform(0.0, 0.08, n),
        "q": rng.uniform(0.0, 0.04, n),
        "vol": rng.uniform(0.05, 1.0, n),
    }


def baseline_greeks(kind: Any, S: Any, K: Any, T: Any, r: Any, q: Any, v: Any) -> dict[str, Any]:
    """Straightforward numpy BSM, scipy.special.ndtr, shared terms once (see module doc)."""
    call = kind if kind.dtype == bool else kind == "call"
    w = np.where(call, 1.0, -1.0)
    sqt = np.sqrt(T)
    sd = v * sqt
    d1 = (np.log(S / K) + (r - q + 0.5 * v * v) * T) / sd
    d2 = d1 - sd
    dq = np.exp(-q * T)
    dr = np.exp(-r * T)
    pdf = np.exp(-0.5 * d1 * d1) / np.sqrt(2.0 * np.pi)
    n1 = ndtr(w * d1)
    n2 = ndtr(w * d2)
    return {
        "price": w * (S * dq * n1 - K * dr * n2),
        "delta": w * dq * n1,
        "gamma": dq * pdf / (S * sd),
        "vega": S * dq * pdf * sqt / 100,
        "theta": (-S * dq * pdf * v / (2 * sqt) - w * r * K * dr * n2 + w * q * S * dq * n1)
        / 365,
        "rho": w * K * T * dr * n2 / 100,
        "vanna": -dq * pdf * d2 / v / 100,
        "volga": S * dq * pdf * sqt * d1 * d2 / v / 1e4,
        "charm": (w * q * dq * n1 - dq * pdf * (2 * (r - q) * T - d2 * sd) / (2 * T * sd)) / 365,
    }


def baseline_price(kind: Any, S: Any, K: Any, T: Any, r: Any, q: Any, v: Any) -> Any:
    call = kind if kind.dtype == bool else kind == "call"
    w = np.where(call, 1.0, -1.0)
    sd = v * np.sqrt(T)
    d1 = (np.log(S / K) + (r - q + 0.5 * v * v) * T) / sd
    d2 = d1 - sd
    return w * (S * np.exp(-q * T) * ndtr(w * d1) - K * np.exp(-r * T) * ndtr(w * d2))


def serial(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        saved = P.PARALLEL_MIN
        P.PARALLEL_MIN = sys.maxsize
        try:
            return fn()
        finally:
            P.PARALLEL_MIN = saved

    return run


def measure(
    cases: dict[str, Callable[[], Any]], repeat: int = REPEAT
) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall and CPU (process) time per case; the cases run interleaved, round after
    round.  CPU time is much less sensitive to other processes on the machine; for the
    threaded rows it adds up the threads (the work, not the latency)."""
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():
        fn()  # warm up (numba compilation, page faults of first use)
    for _ in range(repeat):
        for name, fn in cases.items():
            c0 = time.process_time()
            t0 = time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return (
        {k: statistics.median(v) for k, v in wall.items()},
        {k: statistics.median(v) for k, v in cpu.items()},
    )


def peak_mib(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return peak


def ql_black_calculator_loop(c: dict[str, Any], n: int) -> float:
    import QuantLib as ql

    t0 = time.perf_counter()
    for i in range(n):
        kind = ql.Option.Call if c["ic"][i] else ql.Option.Put
        s, k, t = float(c["S"][i]), float(c["K"][i]), float(c["T"][i])
        r, q, v = float(c["r"][i]), float(c["q"][i]), float(c["vol"][i])
        fwd = s * np.exp((r - q) * t)
        bc = ql.BlackCalculator(ql.PlainVanillaPayoff(kind, k), fwd, v * np.sqrt(t),
                                float(np.exp(-r * t)))
        bc.value(), bc.delta(s), bc.gamma(s), bc.vega(t), bc.theta(s, t), bc.rho(t)
    return time.perf_counter() - t0


def row(task: str, impl: str, t: float, base: float, mem: float | None, note: str = "",
        cpu: tuple[float, float] | None = None) -> None:
    m = "" if mem is None else f"{mem:9.1f}"
    c = "" if cpu is None else f"{cpu[1] / cpu[0]:8.2f}"
    print(f"{task:<13}{impl:<46}{N / t:>13,.0f}{base / t:>9.2f}{c:>8}{m:>10}  {note}")


def header(base_name: str) -> None:
    print(f"\n{'task':<13}{'implementation':<46}{'options/s':>13}{'ours x':>9}{'cpu x':>8}"
          f"{'peak MiB':>10}  (ours x = {base_name} wall time / this row's; cpu x = the same "
          "with CPU time)")


def bench_greeks(c: dict[str, Any]) -> None:
    num = (c["S"], c["K"], c["T"], c["r"], c["q"], c["vol"])
    cases = {
        "base_str": lambda: baseline_greeks(c["kind_str"], *num),
        "base_obj": lambda: baseline_greeks(c["kind_obj"], *num),
        "base_bool": lambda: baseline_greeks(c["ic"], *num),
        "ours_str": lambda: P.greeks(c["kind_str"], *num),
        "ours_obj": lambda: P.greeks(c["kind_obj"], *num),
        "ours_bool": lambda: P.greeks(c["ic"], *num),
        "ours_str_serial": serial(lambda: P.greeks(c["kind_str"], *num)),
        "parse_kind_obj": lambda: P.parse_kind(c["kind_obj"]),
        "base_price": lambda: baseline_price(c["ic"], *num),
        "ours_price": lambda: P.price(c["ic"], *num),
    }
    t, u = measure(cases)
    g = P.greeks(c["kind_obj"], *num)
    ref = baseline_greeks(c["ic"], *num)
    dev = max(float(np.max(np.abs(getattr(g, f) - ref[f]) / np.maximum(1.0, np.abs(ref[f]))))
              for f in ref)
    t_ql = ql_black_calculator_loop(c, N_QL) * N / N_QL
    header("the straightforward numpy/ndtr time")
    print("-- greeks: price + 8 Greeks on 1e6 contracts; ratios against the baseline with the "
          "same kind input")
    def r(name: str, base: str, impl: str, mem: float | None = None, note: str = "") -> None:
        row("greeks" if "price" not in name else "price", impl, t[name], t[base], mem, note,
            (u[name], u[base]))

    r("base_str", "base_str", "baseline numpy + scipy.special.ndtr, str kinds",
      peak_mib(cases["base_str"]))
    r("ours_str", "base_str", "pricing.greeks, kinds numpy str ('call'/'put')",
      peak_mib(cases["ours_str"]), f"max rel diff vs baseline {dev:.1e}")
    r("ours_str_serial", "base_str", "pricing.greeks, str kinds, one thread")
    r("base_obj", "base_obj", "baseline, object-array kinds")
    r("ours_obj", "base_obj", "pricing.greeks, object-array kinds", None,
      f"parse_kind alone {t['parse_kind_obj'] * 1e3:.1f} ms per 1e6")
    r("base_bool", "base_bool", "baseline, bool kinds")
    r("ours_bool", "base_bool", "pricing.greeks, bool kinds")
    row("greeks", f"QuantLib BlackCalculator loop ({N_QL:,})", t_ql, t["base_str"], None,
        "extrapolated; 6 outputs")
    r("base_price", "base_price", "baseline numpy + ndtr")
    r("ours_price", "base_price", "pricing.price")


def bench_iv(c: dict[str, Any]) -> None:
    num = (c["S"], c["K"], c["T"], c["r"], c["q"])
    g = P.greeks(c["ic"], *num, c["vol"])
    px = g.price.copy()
    # 1 % unrecoverable prices: below the discounted intrinsic (in-the-money contracts,
    # 10 % under it) or above the upper bound (S e^{-qT} calls, K e^{-rT} puts; +1 %)
    rng = np.random.default_rng(3)
    fwd = c["S"] * np.exp((c["r"] - c["q"]) * c["T"])
    df = np.exp(-c["r"] * c["T"])
    w = np.where(c["ic"], 1.0, -1.0)
    intrinsic = df * np.maximum(w * (fwd - c["K"]), 0.0)
    upper = np.where(c["ic"], c["S"] * np.exp(-c["q"] * c["T"]), c["K"] * df)
    below = rng.choice(np.flatnonzero(intrinsic > 0.01), N // 200, replace=False)
    above = rng.choice(np.setdiff1d(np.arange(N), below), N // 200, replace=False)
    px[below] = 0.9 * intrinsic[below]
    px[above] = 1.01 * upper[above]
    bad = np.concatenate([below, above])
    unrecoverable = np.zeros(N, dtype=bool)
    unrecoverable[bad] = True
    # recoverable to 1e-10: the float64 price carries the vol to 1e-10 (conditioning
    # 4 eps (price + S + K) / vega <= 1e-10) and the price is a valid one
    vega_unit = g.vega * 100.0
    well = ~unrecoverable & (4.0 * EPS * (px + c["S"] + c["K"]) <= 1e-10 * vega_unit)
    flag = np.where(c["ic"], "c", "p")

    try:
        from importlib.metadata import version

        import py_vollib_vectorized as pvv
    except ImportError:
        sys.exit("py_vollib_vectorized is not installed: .venv/bin/pip install -r "
                 "benchmarks/requirements-peers.txt -c constraints.txt")

    def peer() -> Any:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(pvv.vectorized_implied_volatility(
                px, c["S"], c["K"], c["T"], c["r"], flag, q=c["q"],
                model="black_scholes_merton", return_as="numpy", on_error="ignore",
            )).reshape(-1)

    cases = {
        "peer": peer,
        "ours": lambda: P.implied_vol(px, c["ic"], *num),
        "ours_serial": serial(lambda: P.implied_vol(px, c["ic"], *num)),
    }
    t, u = measure(cases, repeat=3)
    print(f"\n-- implied vol on 1e6 prices ({int(well.sum()):,} recoverable to 1e-10, "
          f"{int(unrecoverable.sum()):,} below intrinsic / above the upper bound)")

    def stats(iv: Any) -> str:
        err = float(np.max(np.abs(iv[well] - c["vol"][well])))
        miss = int(np.isnan(iv[well]).sum())
        not_nan = int((~np.isnan(iv[unrecoverable])).sum())
        return f"max err {err:.1e} (NaN {miss}); unrecoverable not NaN: {not_nan}"

    header("py_vollib_vectorized")
    row("implied_vol", f"py_vollib_vectorized {version('py_vollib_vectorized')} (Jaeckel)",
        t["peer"], t["peer"], peak_mib(peer), stats(peer()), (u["peer"], u["peer"]))
    row("implied_vol", "pricing.implied_vol", t["ours"], t["peer"], peak_mib(cases["ours"]),
        stats(cases["ours"]()), (u["ours"], u["peer"]))
    row("implied_vol", "pricing.implied_vol, one thread", t["ours_serial"], t["peer"], None,
        "", (u["ours_serial"], u["peer"]))


def main() -> None:
    import os
    from importlib.metadata import PackageNotFoundError, version

    import scipy

    try:
        nb = version("numba")
    except PackageNotFoundError:
        nb = "not installed"
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, numba {nb}, "
          f"{os.cpu_count()} CPUs, N = {N:,} mixed contracts, median of {REPEAT} (IV: 3) "
          "interleaved repeats")
    c = contracts(N)
    bench_greeks(c)
    bench_iv(c)


if __name__ == "__main__":
    main()
