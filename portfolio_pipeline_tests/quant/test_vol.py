"""Tests of portfolio_pipeline.quant.vol (GARCH(1,1) fit, forecast, simulation).

Oracle: arch 8.0.0 itself (the fitted result's params / forecast / std_resid, rescaled),
scipy.stats.t / scipy.integrate for the innovation law, and Monte Carlo moments.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pytest
from arch import arch_model
from scipy import integrate, stats

from portfolio_pipeline.quant import vol as V

TRUE = {"mu": 3e-4, "omega": 2e-6, "alpha": 0.08, "beta": 0.9, "nu": 6.0}


def _model(**kw: Any) -> V.GarchFit:
    p = {**TRUE, **kw}
    s2 = p["omega"] / (1 - p["alpha"] - p["beta"])
    return V.GarchFit(
        mu=p["mu"],
        omega=p["omega"],
        alpha=p["alpha"],
        beta=p["beta"],
        nu=p["nu"],
        dist="t" if math.isfinite(p["nu"]) else "normal",
        last_sigma=math.sqrt(s2),
        last_resid=0.0,
        conditional_vol=np.array([math.sqrt(s2)]),
        std_resid=np.array([0.0]),
        loglikelihood=math.nan,
        nobs=1,
    )


@pytest.fixture(scope="module")
def returns() -> np.ndarray:
    """2000 returns simulated from the known GARCH-t process (after a 500-step burn-in)."""
    path = _model().simulate(1, 2500, np.random.default_rng(7))[0]
    return np.asarray(path[500:])


@pytest.fixture(scope="module")
def fitted(returns: np.ndarray) -> V.GarchFit:
    return V.fit_garch(returns)


@pytest.fixture(scope="module")
def arch_res(returns: np.ndarray) -> Any:
    m = arch_model(100 * returns, mean="Constant", vol="GARCH", p=1, q=1, dist="t")
    return m.fit(disp="off")


def test_params_are_arch_params_rescaled(fitted: V.GarchFit, arch_res: Any) -> None:
    p = arch_res.params
    assert fitted.mu == pytest.approx(p["mu"] / 100, rel=1e-12)
    assert fitted.omega == pytest.approx(p["omega"] / 1e4, rel=1e-12)
    assert fitted.alpha == pytest.approx(p["alpha[1]"], rel=1e-12)
    assert fitted.beta == pytest.approx(p["beta[1]"], rel=1e-12)
    assert fitted.nu == pytest.approx(p["nu"], rel=1e-12)
    np.testing.assert_allclose(fitted.std_resid, arch_res.std_resid, rtol=1e-12)
    np.testing.assert_allclose(fitted.conditional_vol, arch_res.conditional_volatility / 100)
    assert fitted.last_sigma == pytest.approx(arch_res.conditional_volatility[-1] / 100)
    assert fitted.nobs == 2000 and fitted.dist == "t"


def test_fit_recovers_true_parameters(fitted: V.GarchFit) -> None:
    # 2000 observations: loose, sampling-error-sized tolerances
    assert fitted.alpha + fitted.beta == pytest.approx(0.98, abs=0.03)
    assert fitted.alpha == pytest.approx(0.08, abs=0.05)
    assert 3.5 < fitted.nu < 12.0
    assert fitted.unconditional_variance == pytest.approx(1e-4, rel=0.5)


@pytest.mark.parametrize("h", [1, 2, 10, 60])
def test_forecast_matches_arch(fitted: V.GarchFit, arch_res: Any, h: int) -> None:
    ref = arch_res.forecast(horizon=h, reindex=False).variance.to_numpy()[-1] / 1e4
    np.testing.assert_allclose(fitted.forecast(h), ref, rtol=1e-10)


def test_forecast_recursion_by_hand() -> None:
    f = _model(last_resid=0.0)
    s2_t = f.last_sigma**2
    first = f.omega + f.beta * s2_t
    np.testing.assert_allclose(
        f.forecast(3),
        [first, f.omega + 0.98 * first, f.omega + 0.98 * (f.omega + 0.98 * first)],
        rtol=1e-14,
    )


def test_normal_fit() -> None:
    r = np.random.default_rng(3).normal(0.0, 0.01, 600)
    f = V.fit_garch(r, dist="normal")
    assert math.isinf(f.nu) and f.dist == "normal"
    assert f.forecast(1)[0] > 0


def test_simulate_shape_and_determinism() -> None:
    f = _model()
    a = f.simulate(5, 7, np.random.default_rng(1))
    b = f.simulate(5, 7, np.random.default_rng(1))
    assert a.shape == (5, 7) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)


def test_simulate_moments_match_forecast() -> None:
    """E[(r_{T+k} - mu)^2] = forecast(h)[k-1]; the 1-step law is mu + sigma * z."""
    f = _model(last_resid=0.02)  # start off the stationary level
    sims = f.simulate(200_000, 5, np.random.default_rng(11))
    np.testing.assert_allclose(((sims - f.mu) ** 2).mean(axis=0), f.forecast(5), rtol=0.03)
    q = np.quantile(sims[:, 0], 0.01)
    ref = f.mu + math.sqrt(f.forecast(1)[0]) * V.std_innovation_ppf(0.01, f.nu)
    assert q == pytest.approx(ref, rel=0.03)
    h_var = np.var(sims.sum(axis=1))
    assert h_var == pytest.approx(f.forecast(5).sum(), rel=0.03)


def test_simulate_normal_innovations() -> None:
    f = _model(nu=math.inf)
    z = f.innovations(np.random.default_rng(0), (100_000,))
    assert abs(z.mean()) < 0.02 and z.var() == pytest.approx(1.0, rel=0.02)
    assert stats.kurtosis(z) == pytest.approx(0.0, abs=0.1)


@pytest.mark.parametrize("nu", [2.5, 4.0, 8.0, 30.0, math.inf])
@pytest.mark.parametrize("p", [0.01, 0.05, 0.2])
def test_innovation_quantile_and_tail_mean(nu: float, p: float) -> None:
    if math.isinf(nu):
        law: Any = stats.norm()
    else:
        law = stats.t(nu, scale=math.sqrt((nu - 2) / nu))
    q = V.std_innovation_ppf(p, nu)
    assert q == pytest.approx(law.ppf(p), rel=1e-12)
    tail, _ = integrate.quad(lambda u: u * law.pdf(u), -np.inf, q, epsabs=1e-13, epsrel=1e-11)
    assert V.std_innovation_tail_mean(p, nu) == pytest.approx(tail / p, rel=1e-8)
    if math.isfinite(nu):
        assert law.var() == pytest.approx(1.0)


def test_fit_input_validation() -> None:
    with pytest.raises(ValueError, match="249 observations; at least 250"):
        V.fit_garch(np.full(249, 0.01))
    bad = np.random.default_rng(0).normal(0, 0.01, 300)
    bad[[3, 9]] = [np.nan, np.inf]
    with pytest.raises(ValueError, match="returns contains 2 non-finite values"):
        V.fit_garch(bad)
    with pytest.raises(ValueError, match="constant"):
        V.fit_garch(np.full(300, 0.001))
    with pytest.raises(ValueError, match="dist"):
        V.fit_garch(np.random.default_rng(0).normal(0, 0.01, 300), dist="skewt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1-D"):
        V.fit_garch(np.zeros((300, 2)))
    with pytest.raises(ValueError, match="empty"):
        V.fit_garch([])


def test_simulate_and_forecast_argument_validation() -> None:
    f = _model()
    with pytest.raises(ValueError, match="horizon"):
        f.forecast(0)
    with pytest.raises(ValueError, match="n_paths"):
        f.simulate(0, 3, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        f.simulate(2, 3, np.random.RandomState(0))  # type: ignore[arg-type]


def test_non_convergence_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    import arch

    class _Res:
        params: ClassVar[dict[str, float]] = {
            "mu": 0.0,
            "omega": 0.1,
            "alpha[1]": 0.1,
            "beta[1]": 0.8,
            "nu": 5.0,
        }
        convergence_flag = 9

        class optimization_result:
            message = "Iteration limit reached"

    class _Model:
        def fit(self, disp: str) -> _Res:
            return _Res()

    monkeypatch.setattr(arch, "arch_model", lambda *a, **k: _Model())
    with pytest.raises(V.GarchFitError, match=r"did not converge.*Iteration limit"):
        V.fit_garch(np.random.default_rng(0).normal(0, 0.01, 300))


def test_roll_forward_matches_arch_filtering_with_fixed_params(returns: np.ndarray) -> None:
    """Reference: arch's own filter (``model.fix(params)``) over all returns with the
    parameters of a fit on the first 1500; the backcast (first 75 observations) is the
    same for both, so the states must agree to rounding."""
    head = V.fit_garch(returns[:1500])
    rolled = head.roll_forward(returns[1500:])
    m = arch_model(100 * returns, mean="Constant", vol="GARCH", p=1, q=1, dist="t")
    fixed = m.fix([head.mu * 100, head.omega * 1e4, head.alpha, head.beta, head.nu])
    assert rolled.last_sigma == pytest.approx(fixed.conditional_volatility[-1] / 100, rel=1e-9)
    assert rolled.last_resid == pytest.approx(returns[-1] - head.mu, rel=1e-12)
    assert rolled.forecast(1)[0] == pytest.approx(
        fixed.forecast(horizon=1, reindex=False).variance.iloc[-1, 0] / 1e4, rel=1e-9
    )
    # parameters and the in-sample description are the fit's
    assert (rolled.omega, rolled.alpha, rolled.beta, rolled.nobs) == (head.omega, head.alpha, head.beta, 1500)
    assert head.roll_forward([]) is head
    with pytest.raises(ValueError, match="non-finite"):
        head.roll_forward([0.01, float("nan")])
