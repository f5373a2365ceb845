"""Small statistics for the study: percentiles, means with a 95% confidence interval (Student's
t), paired differences. Plain Python (the sample sizes are seeds: 2 to a few dozen)."""

from __future__ import annotations

import math

#: two-sided 95% quantiles of Student's t, by degrees of freedom (1..30); beyond, the normal
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
       2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
       2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t95(df: int) -> float:
    if df < 1:
        return float("nan")
    return T95[df - 1] if df <= len(T95) else 1.960


def percentile(values, q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; NaN for no values."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return float(xs[0])
    k = (len(xs) - 1) * q / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (k - lo))


def mean_ci(values) -> dict:
    """``{"mean", "ci95", "n", "sd"}``: the mean and the half-width of its 95% interval
    (0 for one value)."""
    xs = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    n = len(xs)
    if n == 0:
        return {"mean": float("nan"), "ci95": float("nan"), "n": 0, "sd": float("nan")}
    m = sum(xs) / n
    if n == 1:
        return {"mean": m, "ci95": 0.0, "n": 1, "sd": 0.0}
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    return {"mean": m, "ci95": t95(n - 1) * sd / math.sqrt(n), "n": n, "sd": sd}


def distribution(values) -> dict:
    """``{"n", "p50", "p99", "mean", "max"}`` of a sample (NaN when empty)."""
    xs = list(values)
    if not xs:
        nan = float("nan")
        return {"n": 0, "p50": nan, "p99": nan, "mean": nan, "max": nan}
    return {"n": len(xs), "p50": percentile(xs, 50), "p99": percentile(xs, 99),
            "mean": sum(xs) / len(xs), "max": float(max(xs))}


def relative(a: dict, b: dict) -> float:
    """``(b - a) / a`` of two :func:`mean_ci` means (NaN if ``a`` is 0 or missing)."""
    am, bm = a.get("mean"), b.get("mean")
    if am is None or bm is None or not am or math.isnan(am) or math.isnan(bm):
        return float("nan")
    return (bm - am) / am


def paired(xs, ys) -> dict:
    """The mean and 95% interval of the per-seed differences ``y - x``, and of the relative
    differences ``(y - x) / x``: ``{"diff": mean_ci, "rel": mean_ci, "significant"}``
    (significant: the interval of the difference excludes 0)."""
    d = [y - x for x, y in zip(xs, ys)]
    r = [(y - x) / x for x, y in zip(xs, ys) if x]
    dm = mean_ci(d)
    sig = dm["n"] > 1 and abs(dm["mean"]) > dm["ci95"] or (dm["n"] == 1 and dm["mean"] != 0)
    return {"diff": dm, "rel": mean_ci(r), "significant": bool(sig)}
