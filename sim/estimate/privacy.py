"""Privacy of the published counts: k-anonymity-style suppression and optional Laplace noise.

Proximus publishes no zone with fewer than 30 people. Here every zone-bin below the
threshold is *marked* suppressed, not dropped, so validation can measure what privacy
costs (compare scores with and without the suppressed rows). Laplace noise, when asked
for, is added before the suppression is decided (as a publisher would have to, since
deciding on the exact count leaks it) with scale ``sensitivity / epsilon``, the
sensitivity being the people one device stands for. It is per zone-bin: no accounting
of the privacy budget over the many zone-bins a person touches.
"""

from __future__ import annotations

import numpy as np

__all__ = ["protect"]


def protect(
    estimate: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    threshold: float,
    epsilon: float | None,
    sensitivity: float,
    confidence: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Add noise (optional) and mark the zone-bins below `threshold`.

    With noise, the estimate becomes ``max(0, estimate + L)`` and the interval is shifted
    by the same draw and widened on each side by the Laplace quantile ``b ln(1/a)`` (a =
    1 - confidence), so it still covers the sampling interval's target with the noise.

    Returns
    -------
    estimate, lower, upper, suppressed
        Arrays shaped like `estimate`; ``suppressed`` is ``estimate < threshold``.
    """
    if epsilon is not None:
        b = sensitivity / epsilon
        noise = rng.laplace(0.0, b, size=estimate.shape)
        half = b * np.log(1.0 / (1.0 - confidence))
        estimate = np.maximum(estimate + noise, 0.0)
        lower = np.maximum(lower + noise - half, 0.0)
        upper = np.maximum(upper + noise + half, estimate)
    suppressed = estimate < threshold
    return estimate, lower, upper, suppressed
