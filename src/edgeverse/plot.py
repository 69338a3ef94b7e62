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


def _grid_lonlat(problem):
    """Cell corners (nx+1, ny+1) and centres (nx, ny) of a 2D zone in WGS84 lon/lat [deg]."""
    g, proj = problem.grid, problem.projection
    ex, ey = g.edges_m(0), g.edges_m(1)
    cx, cy = g.axis_centers_m(0), g.axis_centers_m(1)
    corners = proj.to_lonlat(*np.meshgrid(ex, ey, indexing="ij"))
    centres = proj.to_lonlat(*np.meshgrid(cx, cy, indexing="ij"))
    return corners, centres


def _region_boundaries(cs: np.ndarray, corner_x: np.ndarray, corner_y: np.ndarray) -> np.ndarray:
    """Segments (n, 2, 2) along the cell edges where the region changes (corner arrays of shape (nx+1, ny+1))."""
    segs = []
    i, j = np.nonzero(cs[1:, :] != cs[:-1, :])  # edge between cell (i, j) and (i+1, j): x edge i+1
    if i.size:
        a = np.stack([corner_x[i + 1, j], corner_y[i + 1, j]], axis=1)
        b = np.stack([corner_x[i + 1, j + 1], corner_y[i + 1, j + 1]], axis=1)
        segs.append(np.stack([a, b], axis=1))
    i, j = np.nonzero(cs[:, 1:] != cs[:, :-1])  # edge between (i, j) and (i, j+1): y edge j+1
    if i.size:
        a = np.stack([corner_x[i, j + 1], corner_y[i, j + 1]], axis=1)
        b = np.stack([corner_x[i + 1, j + 1], corner_y[i + 1, j + 1]], axis=1)
        segs.append(np.stack([a, b], axis=1))
    return np.concatenate(segs) if segs else np.zeros((0, 2, 2))


def _geo_axes(ax, problem, corners) -> None:
    lon, lat = corners
    ax.set_xlim(lon.min(), lon.max())
    ax.set_ylim(lat.min(), lat.max())
    ax.set_xlabel("longitude [deg]")
    ax.set_ylabel("latitude [deg]")
    lat0 = float(np.mean(lat))
    ax.set_aspect(1.0 / np.cos(np.radians(lat0)))  # equal ground distances along both axes
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=7)


def _legend_handles(nb: int) -> list:
    return [
        Line2D([], [], marker="^", color="black", linestyle="", markersize=8, label=f"MEC server ({nb})"),
        Line2D([], [], marker="o", markerfacecolor="white", markeredgecolor="black", linestyle="", label="DT hosted"),
        Line2D([], [], marker="x", color="#c00000", linestyle="", label="DT unhosted"),
    ]


def _default_title(solution, level=None) -> str:
    g, tw = solution.problem.grid, solution.problem.twins
    title = (f"{solution.method}: {solution.objective_ms:.4g} ms, "
             f"{solution.n_hosted}/{tw.n} DTs hosted ({solution.status})")
    if g.dim == 3:
        title += f", z level {0 if level is None else level}"
    return title


def plot_partition_lonlat(solution, ax=None, *, title: str | None = None, show_density: bool = True,
                          annotate: bool = True):
    """The partition map of a scenario placed on Earth (``geo``), with axes in WGS84 longitude and latitude.

    The zone's cells are drawn by their corners carried through the inverse
    projection (so the map is exact, not a rescaled picture); regions are
    filled in distinct colours with their boundaries drawn, servers are black
    triangles, hosted DTs white circles and unhosted DTs red crosses.
    """
    p = solution.problem
    g = p.grid
    if ax is None:
        _, ax = plt.subplots(figsize=(6.6, 6.4))
    nb = p.n_servers
    cs = solution.cell_server.reshape(g.shape)
    mass = p.cell_mass.reshape(g.shape)
    corners, centres = _grid_lonlat(p)
    cmap = ListedColormap(region_colors(nb))
    ax.pcolormesh(corners[0], corners[1], cs, cmap=cmap, vmin=-0.5, vmax=nb - 0.5, alpha=0.55, shading="flat",
                  edgecolors="none", rasterized=True)
    from matplotlib.collections import LineCollection

    ax.add_collection(LineCollection(_region_boundaries(cs, *corners), colors="k", linewidths=0.45, alpha=0.6))
    if show_density and mass.max() > mass.min():
        ax.contour(centres[0], centres[1], mass, levels=5, colors="#303030", linewidths=0.5, alpha=0.35)
    tw = p.twins
    ms = 22 if nb <= 24 else 14
    if tw.n:
        lon, lat = p.projection.to_lonlat(tw.positions_m[:, 0], tw.positions_m[:, 1])
        hosted = solution.allocation.hosted
        ax.scatter(lon[hosted], lat[hosted], s=ms, facecolor="white", edgecolor="black", linewidth=0.7, zorder=3)
        ax.scatter(lon[~hosted], lat[~hosted], s=ms, marker="x", color="#c00000", linewidth=1.1, zorder=3)
    sl = p.server_lonlat_deg
    ax.scatter(sl[:, 0], sl[:, 1], s=90 if nb <= 24 else 34, marker="^", color="black", edgecolor="white",
               linewidth=0.6, zorder=4)
    if annotate and nb <= 24:
        ev = solution.evaluation
        for b in range(nb):
            ax.annotate(f"{p.server_names[b]}\n\u03b1={ev.alpha[b]:.2f} DT {ev.n_hosted[b]}/{ev.n_candidates[b]}",
                        sl[b], textcoords="offset points", xytext=(6, 6), fontsize=7,
                        bbox=dict(boxstyle="round,pad=0.2", fc="white", alpha=0.8), zorder=5)
    ax.legend(handles=_legend_handles(nb), loc="upper right", fontsize=7, framealpha=0.85)
    _geo_axes(ax, p, corners)
    ax.set_title(_default_title(solution) if title is None else title, fontsize=9)
    return ax


def plot_density_lonlat(problem, ax=None, *, title: str | None = None):
    """The sensing density of a geo scenario (share of the sensors per cell) in lon/lat, with the servers."""
    g = problem.grid
    if ax is None:
        _, ax = plt.subplots(figsize=(6.6, 6.4))
    corners, _ = _grid_lonlat(problem)
    mass = problem.cell_mass.reshape(g.shape)
    from matplotlib.colors import PowerNorm

    mesh = ax.pcolormesh(corners[0], corners[1], mass, cmap="magma_r", norm=PowerNorm(0.5, vmin=0.0),
                         shading="flat", edgecolors="none", rasterized=True)
    cb = ax.figure.colorbar(mesh, ax=ax, shrink=0.75, pad=0.02)
    cb.set_label("share of the sensors per cell", fontsize=7)
    cb.ax.tick_params(labelsize=6)
    sl = problem.server_lonlat_deg
    nb = problem.n_servers
    ax.scatter(sl[:, 0], sl[:, 1], s=90 if nb <= 24 else 30, marker="^", color="#1f77b4", edgecolor="white",
               linewidth=0.6, zorder=4, label=f"MEC server ({nb})")
    ax.legend(loc="upper right", fontsize=7, framealpha=0.85)
    _geo_axes(ax, problem, corners)
    if title is None:
        src = problem.scenario.provenance.get("sensing.density") or {}
        what = problem.scenario.sensing.density.kind
        if src:
            what = src.get("kind", what)
            if src.get("value_col"):
                what += f" {src['value_col']}"
            if src.get("fraction_kept") is not None:
                what += f", {100 * src['fraction_kept']:.1f} % of the file's mass in the zone"
        title = f"sensing density ({what})"
    ax.set_title(title, fontsize=9)
    return ax


def _sources_caption(problem) -> str:
    prov = problem.scenario.provenance
    parts = []
    for key, label in (("servers", "sites"), ("sensing.density", "density"), ("twins.positions", "twins")):
        src = prov.get(key) or {}
        if src.get("file"):
            extra = ""
            if key == "servers":
                extra = (f" ({src.get('cells_kept')} rows -> {src.get('n_servers')} servers, "
                         f"merge radius {src.get('merge_radius_m'):g} m)")
            parts.append(f"{label}: {Path(src['file']).name}{extra}")
    geo = problem.scenario.geo
    if geo is not None and geo.center_lonlat_deg is not None:
        lon, lat = geo.center_lonlat_deg
        parts.append(f"projection: {geo.projection} at ({lon:.5f}, {lat:.5f})")
    return "; ".join(parts)


def plot_partition(solution, ax=None, *, level: int | None = None, title: str | None = None,
                   show_density: bool = True, annotate: bool = True, twin_levels: tuple[int, int] | None = None):
    """Draw a solution's regions, servers and DTs on ``ax`` and return the axes.

    Regions are filled in distinct colours; servers are black triangles labelled
    with their region's mass alpha and DT counts; hosted DTs are white circles,
    unhosted DTs red crosses.  In a 3D zone ``level`` picks the z layer (default 0)
    and the DTs drawn are those standing in z layers ``twin_levels`` (first,
    last; default: that layer only).
    A 2D scenario placed on Earth (with a ``geo`` section) is drawn in lon/lat
    (:func:`plot_partition_lonlat`).
    """
    p = solution.problem
    g = p.grid
    if getattr(p, "projection", None) is not None and g.dim == 2:
        return plot_partition_lonlat(solution, ax, title=title, show_density=show_density, annotate=annotate)
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
        shown = np.ones(tw.n, dtype=bool)
        if g.dim == 3:
            lo, hi = twin_levels if twin_levels is not None else (lv, lv)
            zi = np.unravel_index(np.asarray(tw.cell), g.shape)[2]
            shown = (zi >= lo) & (zi <= hi)
        on, off = hosted & shown, ~hosted & shown
        ax.scatter(pos[on, 0], pos[on, 1], s=22, facecolor="white", edgecolor="black", linewidth=0.8, zorder=3)
        ax.scatter(pos[off, 0], pos[off, 1], s=22, marker="x", color="#c00000", linewidth=1.2, zorder=3)
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
            title += f", z level {lv}"
            if twin_levels is not None and twin_levels != (lv, lv):
                title += f" (DTs of levels {twin_levels[0]}-{twin_levels[1]})"
    ax.set_title(title, fontsize=9)
    return ax


def save_partition_map(solution, path: str | Path) -> Path:
    """Write the partition map PNG (one panel per z level, at most 4, in a 3D zone).

    With more than 4 z levels, 4 evenly spaced levels are drawn and each DT is
    drawn on the panel of the nearest drawn level (so every DT appears once).

    A scenario placed on Earth gets two lon/lat panels: the partition, and the
    sensing density with the servers; the data files are named underneath.
    """
    g = solution.problem.grid
    if getattr(solution.problem, "projection", None) is not None and g.dim == 2:
        ratio = g.size_m[1] / g.size_m[0]  # the panels follow the zone's shape
        fig, axes = plt.subplots(1, 2, figsize=(13.6, float(np.clip(6.0 * ratio + 1.4, 4.0, 9.0))))
        plot_partition_lonlat(solution, axes[0])
        plot_density_lonlat(solution.problem, axes[1])
        fig.suptitle(f"scenario {solution.scenario.name!r}", fontsize=10)
        caption = _sources_caption(solution.problem)
        if caption:
            fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=7, color="#404040")
        fig.tight_layout(rect=(0, 0.035, 1, 0.97))
    else:
        levels = [None] if g.dim == 2 else sorted(set(np.linspace(0, g.shape[2] - 1, min(4, g.shape[2])).astype(int)))
        fig, axes = plt.subplots(1, len(levels), figsize=(6.4 * len(levels), 6.0), squeeze=False)
        for i, (ax, lv) in enumerate(zip(axes[0], levels)):
            if lv is None:
                plot_partition(solution, ax)
                continue
            # DTs of the levels nearer to this panel's level than to the neighbouring panels' levels
            lo = 0 if i == 0 else (levels[i - 1] + lv) // 2 + 1
            hi = g.shape[2] - 1 if i == len(levels) - 1 else (lv + levels[i + 1]) // 2
            plot_partition(solution, ax, level=lv, twin_levels=(lo, hi))
        fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path, *, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG through a temporary file and a rename (never a half-written figure), close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi, metadata=PNG_METADATA)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path
