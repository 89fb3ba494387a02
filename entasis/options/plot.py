"""PNG of a snapshot's smiles and fitted surface (matplotlib's Agg canvas: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from entasis.options.svi import svi_total_variance

if TYPE_CHECKING:
    from entasis.options.store import Surface


def plot_surface(surface: Surface, path: str | Path, *, title: str = "") -> Path:
    """Left: market vols and SVI smiles per expiry; right: the SVI surface, interpolated in total variance."""
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    smiles = surface.smiles.sort_values("t_years").reset_index(drop=True)
    pts = surface.points
    fig = Figure(figsize=(14, 6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    cmap = mpl.colormaps["viridis"]
    n = max(len(smiles), 1)
    fitted = smiles[np.isfinite(smiles["svi_a"].to_numpy(float))]
    for i, row in smiles.iterrows():
        color = cmap(i / max(n - 1, 1))
        label = f"{row['expiry']:%d%b%y} ({row['t_years'] * 365:.0f}d)"
        p = pts[pts["expiry"] == row["expiry"]]
        ax.scatter(p["k"], p["iv"] * 100, s=14, color=color, label=label)
        if np.isfinite(row["svi_a"]):
            kk = np.linspace(row["k_min"] - 0.02, row["k_max"] + 0.02, 120)
            par = row[["svi_a", "svi_b", "svi_rho", "svi_m", "svi_sigma"]].to_numpy(float)
            ax.plot(kk, np.sqrt(svi_total_variance(par, kk) / row["t_years"]) * 100, color=color, lw=1.2)
    ax.set_xlabel("log-moneyness ln(K/F)")
    ax.set_ylabel("implied vol (%)")
    ax.set_title("smiles: market (dots) and SVI (lines)")
    ax.grid(alpha=0.3)
    if len(smiles):
        ax.legend(fontsize=7, ncol=2)

    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    if len(fitted) >= 2:
        k_lo, k_hi = float(fitted["k_min"].max()), float(fitted["k_max"].min())
        if k_hi <= k_lo:
            k_lo, k_hi = float(fitted["k_min"].min()), float(fitted["k_max"].max())
        kk = np.linspace(k_lo, k_hi, 40)
        t = fitted["t_years"].to_numpy(float)
        params = fitted[["svi_a", "svi_b", "svi_rho", "svi_m", "svi_sigma"]].to_numpy(float)
        w = svi_total_variance(params, np.broadcast_to(kk, (len(t), kk.size)))
        tt = np.linspace(t.min(), t.max(), 40)
        wg = np.stack([np.interp(tt, t, w[:, j]) for j in range(kk.size)], axis=1)
        vol = np.sqrt(np.maximum(wg, 0) / tt[:, None]) * 100
        K, T = np.meshgrid(kk, tt * 365)
        ax3.plot_surface(K, T, vol, cmap=cmap, linewidth=0, antialiased=True, alpha=0.9)
    ax3.set_xlabel("ln(K/F)")
    ax3.set_ylabel("days")
    ax3.set_zlabel("vol (%)")
    ax3.set_title("SVI surface (total variance linear in T)")
    if title:
        fig.suptitle(title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
