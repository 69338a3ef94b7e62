"""Figures (the only module that imports matplotlib): partition maps like the paper's Fig. 2."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

#: PNG metadata without a timestamp or version, so that files are reproducible.
PNG_METADATA = {"Software": None}


def region_colors(n: int) -> np.ndarray:
    """``n`` clearly distinct RGBA colours (tab10 / tab20, then a spread of hues for more)."""
    if n <= 10:
        return plt.get_cmap("tab10")(np.arange(n))
    if n <= 20:
        base = plt.get_cmap("tab20")(np.arange(20))
        return base[np.r_[0:20:2, 1:20:2]][:n]
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    rng = np.random.default_rng(12345)
    sat = 0.55 + 0.4 * rng.random(n)
    val = 0.7 + 0.3 * rng.random(n)
    from matplotlib.colors import hsv_to_rgb

    rgb = hsv_to_rgb(np.stack([hues, sat, val], axis=1))
    return np.concatenate([rgb, np.ones((n, 1))], axis=1)


def plot_partition(solution, ax=None, *, level: int | None = None, title: str | None = None,
                   show_density: bool = True, annotate: bool = True):
    """Draw a solution's regions, servers and DTs on ``ax`` and return the axes.

    Regions are filled in distinct colours; servers are black triangles labelled
    with their region's mass alpha and DT counts; hosted DTs are white circles,
    unhosted DTs red crosses.  In a 3D zone ``level`` picks the z layer (default 0).
    """
    p = solution.problem
    g = p.grid
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 6.0))
    nb = p.n_servers
    cs = solution.cell_server.reshape(g.shape)
    mass = p.cell_mass.reshape(g.shape)
    if g.dim == 3:
        lv = 0 if level is None else int(level)
        cs, mass = cs[:, :, lv], mass[:, :, lv]
    x0, y0 = g.origin_m[0], g.origin_m[1]
    x1, y1 = x0 + g.size_m[0], y0 + g.size_m[1]
    cmap = ListedColormap(region_colors(nb))
    ax.imshow(cs.T, origin="lower", extent=(x0, x1, y0, y1), cmap=cmap, vmin=-0.5, vmax=nb - 0.5,
              interpolation="nearest", alpha=0.55)
    if show_density and mass.max() > mass.min():
        xc, yc = g.axis_centers_m(0), g.axis_centers_m(1)
        ax.contour(xc, yc, mass.T, levels=5, colors="k", linewidths=0.5, alpha=0.35)
    ev = solution.evaluation
    tw = p.twins
    if tw.n:
        pos = tw.positions_m
        hosted = solution.allocation.hosted
        ax.scatter(pos[hosted, 0], pos[hosted, 1], s=22, facecolor="white", edgecolor="black", linewidth=0.8, zorder=3)
        ax.scatter(pos[~hosted, 0], pos[~hosted, 1], s=22, marker="x", color="#c00000", linewidth=1.2, zorder=3)
    sp = p.server_positions_m
    ax.scatter(sp[:, 0], sp[:, 1], s=90, marker="^", color="black", edgecolor="white", zorder=4)
    if annotate and nb <= 24:
        for b in range(nb):
            ax.annotate(f"{p.server_names[b]}\n\u03b1={ev.alpha[b]:.2f} DT {ev.n_hosted[b]}/{ev.n_candidates[b]}",
                        sp[b], textcoords="offset points", xytext=(6, 6), fontsize=7,
                        bbox=dict(boxstyle="round,pad=0.2", fc="white", alpha=0.8), zorder=5)
    handles = [
        Line2D([], [], marker="^", color="black", linestyle="", markersize=8, label="MEC server"),
        Line2D([], [], marker="o", markerfacecolor="white", markeredgecolor="black", linestyle="", label="DT hosted"),
        Line2D([], [], marker="x", color="#c00000", linestyle="", label="DT unhosted"),
    ]
    ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.85)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_aspect("equal")
    if title is None:
        title = (f"{solution.method}: {solution.objective_ms:.2f} ms, "
                 f"{solution.n_hosted}/{tw.n} DTs hosted ({solution.status})")
        if g.dim == 3:
            title += f", z level {0 if level is None else level}"
    ax.set_title(title, fontsize=9)
    return ax


def save_partition_map(solution, path: str | Path) -> Path:
    """Write the partition map PNG (one panel per z level, at most 4, in a 3D zone)."""
    g = solution.problem.grid
    levels = [None] if g.dim == 2 else sorted(set(np.linspace(0, g.shape[2] - 1, min(4, g.shape[2])).astype(int)))
    fig, axes = plt.subplots(1, len(levels), figsize=(6.4 * len(levels), 6.0), squeeze=False)
    for ax, lv in zip(axes[0], levels):
        plot_partition(solution, ax, level=lv)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, metadata=PNG_METADATA)
    plt.close(fig)
    tmp.replace(path)
    return path
