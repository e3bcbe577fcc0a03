"""A derivative-free minimiser for the calibration fits: the downhill simplex of Nelder and
Mead (1965), in plain numpy so the fits need no scipy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["nelder_mead", "squash", "unsquash"]


def nelder_mead(f, x0, step=0.25, iters=600, tol=1e-9):
    """``(x, f(x))`` at a minimum of ``f`` from ``x0`` (Nelder & Mead 1965): a simplex of
    ``len(x0) + 1`` points ``step`` apart, reflected, expanded, contracted or shrunk until the
    spread of its values is below ``tol`` or after ``iters`` rounds.

    >>> x, fx = nelder_mead(lambda x: (x[0] - 1.0) ** 2 + (x[1] + 2.0) ** 2, [0.0, 0.0])
    >>> [round(float(v), 3) for v in x], bool(fx < 1e-8)
    ([1.0, -2.0], True)
    """
    pts = [np.array(x0, float)] + [np.array(x0, float) + step * e for e in np.eye(len(x0))]
    vals = [f(x) for x in pts]
    for _ in range(iters):
        order = np.argsort(vals)
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        if vals[-1] - vals[0] < tol:
            break
        c = np.mean(pts[:-1], axis=0)
        xr = c + (c - pts[-1])
        fr = f(xr)
        if fr < vals[0]:
            xe = c + 2 * (c - pts[-1])
            fe = f(xe)
            pts[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = xr, fr
        else:
            xc = c + 0.5 * (pts[-1] - c)
            fc = f(xc)
            if fc < vals[-1]:
                pts[-1], vals[-1] = xc, fc
            else:
                pts = [pts[0] + 0.5 * (x - pts[0]) for x in pts]
                vals = [f(x) for x in pts]
    best = int(np.argmin(vals))
    return pts[best], vals[best]


def squash(z, lo, hi):
    """A free variable mapped onto ``[lo, hi]`` (logistic): how the fits keep a parameter
    inside its physical bounds while the simplex moves freely.

    >>> round(float(squash(unsquash(0.8, 0.5, 1.0), 0.5, 1.0)), 12)
    0.8
    """
    return lo + (hi - lo) / (1.0 + np.exp(-z))


def unsquash(v, lo, hi):
    """The free variable of a value in ``[lo, hi]`` (its inverse), kept off the flat tails
    of the logistic so the simplex can move."""
    f = min(max((v - lo) / (hi - lo), 0.02), 0.98)
    return float(np.log(f / (1 - f)))
