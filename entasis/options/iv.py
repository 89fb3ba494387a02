"""Implied volatility, vectorised and safeguarded.

The price is reduced to the normalised time value ``beta = (V/df - intrinsic) / sqrt(F K)`` of an
out-of-the-money call at ``x = -|ln(F/K)|`` (calls and puts at one strike share it). The curve
``beta(s)`` of total volatility ``s = sigma sqrt(T)`` is convex below its inflection point
``s_c = sqrt(2|x|)`` and concave above it, so the inflection point splits the problem into two
monotone, bracketed sub-problems (the idea behind Jäckel's "Let's Be Rational"):

* below ``beta(s_c)`` we solve ``ln beta(s) = ln beta`` (nearly linear in the deep wing, and free
  of underflow: the log-price and its derivatives come from scaled erfc values);
* above it we solve ``beta(s) = beta`` directly; at the money (x = 0) ``s = 2 sqrt2 erfinv(beta)``.

Each element runs third-order Householder steps from an asymptotic initial guess; a step that
leaves its bracket is replaced by bisection, so it cannot diverge. Typical cost is 2-4
iterations per option. A price outside the no-arbitrage bounds gives NaN with a reason code,
never a number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from entasis.options.black import FloatArray, as_call_flag, tv_high

OK = 0
INVALID_INPUT = 1
EXPIRED = 2
BELOW_INTRINSIC = 3
AT_INTRINSIC = 4
ABOVE_UPPER_BOUND = 5
NO_CONVERGENCE = 6
REASONS: dict[int, str] = {
    OK: "ok",
    INVALID_INPUT: "invalid input (NaN, non-positive forward/strike/discount or negative price)",
    EXPIRED: "non-positive time to expiry",
    BELOW_INTRINSIC: "price below intrinsic value",
    AT_INTRINSIC: "price equals intrinsic value (no time value: volatility undetermined)",
    ABOVE_UPPER_BOUND: "price at or above the upper bound (forward for a call, strike for a put)",
    NO_CONVERGENCE: "solver did not converge",
}

_SQRT2 = float(np.sqrt(2.0))
_INV_SQRT2 = float(1.0 / np.sqrt(2.0))
_INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))
_SQRT_2_OVER_PI = float(np.sqrt(2.0 / np.pi))
_LN_2PI = float(np.log(2.0 * np.pi))
_MAX_ITER = 60
_TOL = 1e-6  # relative size of the last Householder step; the error left after it is O(tol³)


@dataclass(frozen=True)
class IVResult:
    """Implied volatilities with a per-option reason code (see ``REASONS``); NaN where code != OK."""

    iv: FloatArray
    code: NDArray[np.int8]

    def reasons(self) -> NDArray[np.str_]:
        """The code of each option as text."""
        names = np.array([REASONS[i] for i in range(len(REASONS))])
        return np.asarray(names[self.code.astype(int)])

    def summary(self) -> dict[str, int]:
        """How many options fell under each reason."""
        vals, counts = np.unique(self.code, return_counts=True)
        return {REASONS[int(v)]: int(c) for v, c in zip(vals, counts, strict=True)}


def implied_vol(
    price: ArrayLike, F: ArrayLike, K: ArrayLike, T: ArrayLike, is_call: ArrayLike, df: ArrayLike = 1.0,
    *, workers: int = 1,
) -> FloatArray:
    """Black-76 implied volatility; NaN where the price admits none (see :func:`implied_vol_detail`)."""
    return implied_vol_detail(price, F, K, T, is_call, df, workers=workers).iv


def implied_vol_detail(
    price: ArrayLike, F: ArrayLike, K: ArrayLike, T: ArrayLike, is_call: ArrayLike, df: ArrayLike = 1.0,
    *, workers: int = 1,
) -> IVResult:
    """Black-76 implied volatility of ``price`` (forward ``F``, discount factor ``df``), with reasons.

    ``workers`` > 1 splits large batches over threads (NumPy and scipy.special release the GIL).
    """
    call = as_call_flag(is_call)
    arrs = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (price, F, K, T, df)), call)
    shape = arrs[0].shape
    p, f, k, t, d = (np.ravel(a) for a in arrs[:5])
    c = np.ravel(arrs[5])
    n = p.size
    iv = np.full(n, np.nan)
    code = np.zeros(n, dtype=np.int8)

    with np.errstate(invalid="ignore", divide="ignore"):
        invalid = ~(np.isfinite(p) & np.isfinite(f) & np.isfinite(k) & np.isfinite(t) & np.isfinite(d))
        invalid |= ~((f > 0) & (k > 0) & (d > 0) & (p >= 0))
        code[invalid] = INVALID_INPUT
        code[~invalid & ~(t > 0)] = EXPIRED
        undisc = p / d
        intrinsic = np.maximum(np.where(c, f - k, k - f), 0.0)
        tv = undisc - intrinsic
        upper = np.minimum(f, k)
        live = code == OK
        # within a few ulps of intrinsic is rounding of a price that has no time value left
        at = np.abs(tv) <= 4.0 * np.finfo(float).eps * np.maximum(undisc, intrinsic)
        code[live & (tv < 0) & ~at] = BELOW_INTRINSIC
        code[live & at] = AT_INTRINSIC
        code[live & (tv >= upper)] = ABOVE_UPPER_BOUND
    live = np.flatnonzero(code == OK)
    if live.size:
        beta = tv[live] / np.sqrt(f[live] * k[live])
        x = -np.abs(np.log(f[live] / k[live]))
        s, ok = _solve_parallel(x, beta, workers)
        iv[live[ok]] = s[ok] / np.sqrt(t[live[ok]])
        code[live[~ok]] = NO_CONVERGENCE
    return IVResult(iv.reshape(shape), code.reshape(shape))


def _solve_parallel(x: FloatArray, beta: FloatArray, workers: int) -> tuple[FloatArray, NDArray[np.bool_]]:
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 or x.size < 20_000:
        return normalised_implied_total_vol(x, beta)
    from concurrent.futures import ThreadPoolExecutor

    parts = np.array_split(np.arange(x.size), workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda ix: normalised_implied_total_vol(x[ix], beta[ix]), parts))
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


def _initial_lower(x: FloatArray, lnb: FloatArray, s_c: FloatArray) -> FloatArray:
    """Deep-wing asymptotics: ln beta ≈ -(x²/s²+s²/4)/2 + ln s - ln√(2π) - ln(x²/s² - s²/4)."""
    x2 = x * x
    u = np.maximum(-2.0 * lnb, 1e-300)
    s = np.abs(x) / np.sqrt(u)
    for _ in range(3):
        s = np.minimum(s, s_c)
        prod = np.maximum(x2 / (s * s) - 0.25 * s * s, 1e-300)
        u = -2.0 * lnb - 0.25 * s * s + 2.0 * np.log(s) - _LN_2PI - 2.0 * np.log(prod)
        s = np.abs(x) / np.sqrt(np.maximum(u, 1e-300))
    return np.clip(s, np.abs(x) / 64.0, s_c)


def _initial_upper(x: FloatArray, beta: FloatArray, s_c: FloatArray) -> FloatArray:
    """High-vol asymptotics: exp(x/2) - beta ≈ 2 cosh(x/2) N(-s/2)."""
    gap = np.maximum(np.exp(0.5 * x) - beta, 1e-300)
    s = -2.0 * special.ndtri(np.minimum(gap / (2.0 * np.cosh(0.5 * x)), 0.5))
    return np.maximum(s, s_c)


def normalised_implied_total_vol(x: ArrayLike, beta: ArrayLike) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Total vol ``s`` with ``normalised_time_value(x, s) == beta`` for x <= 0, 0 < beta < exp(x/2).

    Returns (s, converged). Inputs outside that domain are the caller's job to screen.
    """
    xa = np.ravel(np.asarray(x, dtype=float))
    ba = np.ravel(np.asarray(beta, dtype=float))
    n = xa.size
    s = np.full(n, np.nan)
    ok = np.zeros(n, dtype=bool)

    atm = xa == 0
    if atm.any():
        s[atm] = 2.0 * _SQRT2 * special.erfinv(ba[atm])
        ok[atm] = np.isfinite(s[atm])
    idx = np.flatnonzero(~atm)
    if idx.size == 0:
        return s, ok
    xs, bs = xa[idx], ba[idx]
    s_c = np.sqrt(-2.0 * xs)
    lower = bs < tv_high(xs, s_c)
    for branch_lower in (True, False):
        sel = np.flatnonzero(lower == branch_lower)
        if sel.size == 0:
            continue
        xb, bb, sc = xs[sel], bs[sel], s_c[sel]
        if branch_lower:
            lnb = np.log(bb)
            sb, okb = _householder(_LowerBranch(xb, lnb), _initial_lower(xb, lnb, sc), np.zeros_like(sc), sc)
        else:
            sb, okb = _householder(_UpperBranch(xb, bb), _initial_upper(xb, bb, sc), sc, np.full_like(sc, np.inf))
        s[idx[sel]] = sb
        ok[idx[sel]] = okb
    return s, ok


class _LowerBranch:
    """Objective ln beta(s) - ln beta below the inflection point (no underflow: scaled erfc)."""

    def __init__(self, x: FloatArray, lnb: FloatArray) -> None:
        self.x, self.x2, self.lnb = x, x * x, lnb

    def __call__(self, act: NDArray[np.intp], s: FloatArray) -> tuple[FloatArray, ...]:
        x, x2 = self.x[act], self.x2[act]
        d1 = x / s + 0.5 * s
        d2 = d1 - s
        dd = special.erfcx(d1 * -_INV_SQRT2) - special.erfcx(d2 * -_INV_SQRT2)
        x2s2 = x2 / (s * s)
        q2 = x2s2 / s - 0.25 * s
        q3 = q2 * q2 - 3.0 * x2s2 / (s * s) - 0.25
        r1 = _SQRT_2_OVER_PI / dd
        g = np.log(0.5 * dd) - 0.5 * (x2s2 + 0.25 * s * s) - self.lnb[act]
        return g, r1, q2 - r1, q3 - 3.0 * r1 * q2 + 2.0 * r1 * r1


class _UpperBranch:
    """Objective beta(s) - beta above the inflection point."""

    def __init__(self, x: FloatArray, beta: FloatArray) -> None:
        self.x, self.x2, self.beta = x, x * x, beta
        self.eh = 0.5 * np.exp(0.5 * x)
        self.sh = 2.0 * np.sinh(0.5 * x)

    def __call__(self, act: NDArray[np.intp], s: FloatArray) -> tuple[FloatArray, ...]:
        x, x2 = self.x[act], self.x2[act]
        d1 = x / s + 0.5 * s
        d2 = d1 - s
        b = (self.eh[act] * (special.erf(d1 * _INV_SQRT2) - special.erf(d2 * _INV_SQRT2))
             + self.sh[act] * special.ndtr(d2))
        x2s2 = x2 / (s * s)
        q2 = x2s2 / s - 0.25 * s
        q3 = q2 * q2 - 3.0 * x2s2 / (s * s) - 0.25
        gp = _INV_SQRT_2PI * np.exp(-0.5 * (x2s2 + 0.25 * s * s))
        return b - self.beta[act], gp, q2, q3


def _householder(
    obj: _LowerBranch | _UpperBranch, s0: FloatArray, lo: FloatArray, hi: FloatArray
) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Third-order Householder on a bracketed monotone objective; bisection when a step escapes."""
    cur = s0.copy()
    ok = np.zeros(cur.size, dtype=bool)
    act = np.arange(cur.size)
    for _ in range(_MAX_ITER):
        sa = cur[act]
        g, gp, h2, h3 = obj(act, sa)
        lo_a = np.where(g < 0, sa, lo[act])
        hi_a = np.where(g > 0, sa, hi[act])
        lo[act], hi[act] = lo_a, hi_a
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            nu = -g / gp
            factor = (1.0 + 0.5 * h2 * nu) / (1.0 + nu * (h2 + h3 * nu / 6.0))
            ds = nu * np.where((factor > 0) & (factor < 2), factor, 1.0)
            new = sa + ds
        # a step below tolerance ends the search (even one that rounds onto a bracket end)
        done = (g == 0) | (np.abs(ds) <= _TOL * sa)
        bad = ~done & (~((new > lo_a) & (new < hi_a)) | ~np.isfinite(new))
        if bad.any():
            new = np.where(bad, np.where(np.isfinite(hi_a), 0.5 * (lo_a + hi_a), 2.0 * sa), new)
        # a bracket squeezed to rounding also ends it (objective flat at floating-point resolution)
        done |= np.isfinite(hi_a) & (hi_a - lo_a <= 4e-16 * hi_a)
        cur[act] = np.where(g == 0, sa, new)
        ok[act[done]] = True
        act = act[~done]
        if act.size == 0:
            break
    return cur, ok
