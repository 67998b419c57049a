"""EM's stopping rule is scale-aware: its error falls like 1/sqrt(N) with the devices N."""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from sim.estimate.em import em_deconvolve

#: Share of the devices on each of four tiles.
P = np.array([0.3, 0.2, 0.25, 0.25])
DEVICES = [10**4, 10**5, 10**6, 10**7]
REPS = 60


def toy_world() -> np.ndarray:
    """Four tiles on a line seen by six cells with overlapping Gaussian footprints:
    identifiable (full column rank, condition number about 12) but slow for EM."""
    tiles, cells = np.arange(4.0), np.linspace(-0.5, 3.5, 6)
    a = np.exp(-0.5 * ((cells[:, None] - tiles[None, :]) / 1.0) ** 2)
    return a / a.sum(axis=0, keepdims=True)


def relative_rule_em(counts: np.ndarray, a: np.ndarray, *, tol: float = 1e-4) -> np.ndarray:
    """The former rule, for comparison: stop when |u_new - u|_1 / |u|_1 < tol."""
    sens = a.sum(axis=0)
    u = np.full(a.shape[1], counts.sum() / sens.sum())
    for _ in range(100_000):
        new = u * (a.T @ (counts / (a @ u))) / sens
        change = np.abs(new - u).sum() / u.sum()
        u = new
        if change < tol:
            break
    return u


def mean_error(n: int, rng: np.random.Generator) -> tuple[float, float]:
    """Mean L1 error of the tile shares over REPS worlds of `n` devices: new rule, old rule."""
    a = toy_world()
    counts = rng.poisson(a @ P * n, size=(REPS, a.shape[0])).T.astype(float)
    new = em_deconvolve(counts, csr_matrix(a), max_iter=100_000)
    assert (new.n_iter < 100_000).all()  # stopped by the rule, not the cap
    err_new = np.abs(new.u / n - P[:, None]).sum(axis=0).mean()
    err_old = np.mean(
        [np.abs(relative_rule_em(counts[:, r], a) / n - P).sum() for r in range(REPS)]
    )
    return float(err_new), float(err_old)


def test_em_error_falls_like_one_over_sqrt_n_over_three_decades() -> None:
    rng = np.random.default_rng(2020)
    errors = [mean_error(n, rng) for n in DEVICES]
    new = np.array([e[0] for e in errors])
    old = np.array([e[1] for e in errors])
    # each decade of devices divides the error by about sqrt(10) = 3.16
    steps = new[:-1] / new[1:]
    assert ((steps > 2.3) & (steps < 4.3)).all(), steps
    # over three decades by about sqrt(1000) = 31.6
    assert 31.6 / 1.4 < new[0] / new[-1] < 31.6 * 1.4, new
    slope = np.polyfit(np.log10(DEVICES), np.log10(new), 1)[0]
    assert -0.6 < slope < -0.4, slope
    # the former relative rule stops falling: its bias does not shrink with N
    assert old[-1] > 3 * new[-1], (old, new)
    assert old[-2] / old[-1] < 1.5, old
