#!/usr/bin/env python3
"""Fits the rational approximation of erfcx(t) = exp(t^2) * erfc(t) used by the GELU kernel.

Writes the coefficients of P (degree 4) and Q (degree 5, Q(0) = 1) with
erfcx(t) ~= P(t) / Q(t) on [0, T_MAX], minimising the maximum relative error by
iteratively reweighted linearised least squares (Sanathanan-Koerner with Lawson weights).

Needs numpy and mpmath (pip install numpy mpmath). The constants in
src/cpu/math.rs were produced by this script; rerun it to check or refit them.
"""
import mpmath as mp
import numpy as np

T_MAX = 10.5  # covers |x| / sqrt(2) for |x| <= 14.5 (beyond that GELU is x or 0 in f32)
P_DEG, Q_DEG = 4, 5
NODES = 4000

mp.mp.dps = 40
xs = np.array([T_MAX * (1 - np.cos(np.pi * (i + 0.5) / NODES)) / 2 for i in range(NODES)])
target = np.array([float(mp.erfc(mp.mpf(x)) * mp.exp(mp.mpf(x) ** 2)) for x in xs])


def fit():
    weights = np.ones(NODES)
    q_prev = np.ones(NODES)
    vp = np.vander(xs, P_DEG + 1, increasing=True)
    vq = np.vander(xs, Q_DEG + 1, increasing=True)[:, 1:]
    for it in range(40):
        a = np.hstack([vp, -target[:, None] * vq])
        scale = (weights / (np.abs(q_prev) * target))[:, None]
        coef, *_ = np.linalg.lstsq(a * scale, target * scale[:, 0], rcond=None)
        p = vp @ coef[: P_DEG + 1]
        q = 1 + vq @ coef[P_DEG + 1 :]
        rel = p / q / target - 1
        q_prev = q
        if it > 5:
            weights = weights * np.abs(rel) ** 0.5
            weights /= weights.sum() / NODES
    return coef[: P_DEG + 1], np.concatenate([[1.0], coef[P_DEG + 1 :]])


p, q = fit()
dense = np.linspace(0, T_MAX, 5001)
exact = np.array([float(mp.erfc(mp.mpf(x)) * mp.exp(mp.mpf(x) ** 2)) for x in dense])
approx = np.polyval(p[::-1], dense) / np.polyval(q[::-1], dense)
print("max relative error on a dense grid:", np.max(np.abs(approx / exact - 1)))
print("min Q:", np.polyval(q[::-1], dense).min())
print("P:", [repr(float(c)) for c in p])
print("Q:", [repr(float(c)) for c in q])
