"""The zone's regular grid of cells and spatial distributions discretised on it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.special import ndtr

from .scenario import ArrayDensity, GaussianMixture, PointList, Uniform, Zone, load_array_density


@dataclass(frozen=True)
class Grid:
    """A regular grid over a 2D or 3D box; cells are numbered in C order (last axis fastest).

    Examples
    --------
    >>> g = Grid(origin_m=(0.0, 0.0), size_m=(100.0, 50.0), shape=(4, 2))
    >>> g.n_cells, g.cell_size_m, g.cell_volume_m3
    (8, (25.0, 25.0), 625.0)
    >>> g.centers_m()[:2].tolist()
    [[12.5, 12.5], [12.5, 37.5]]
    >>> int(g.cell_of([[99.0, 49.0]])[0])
    7
    """

    origin_m: tuple[float, ...]
    size_m: tuple[float, ...]
    shape: tuple[int, ...]

    @classmethod
    def from_zone(cls, zone: Zone) -> "Grid":
        return cls(tuple(map(float, zone.origin_m)), tuple(map(float, zone.size_m)), tuple(map(int, zone.cells)))

    @property
    def dim(self) -> int:
        return len(self.shape)

    @property
    def n_cells(self) -> int:
        return int(np.prod(self.shape))

    @property
    def cell_size_m(self) -> tuple[float, ...]:
        return tuple(s / n for s, n in zip(self.size_m, self.shape))

    @property
    def cell_volume_m3(self) -> float:
        """Cell volume [m^3] in 3D; in 2D the cell area [m^2] (a slab of unit thickness)."""
        return float(np.prod(self.cell_size_m))

    def edges_m(self, axis: int) -> np.ndarray:
        return self.origin_m[axis] + np.linspace(0.0, self.size_m[axis], self.shape[axis] + 1)

    def axis_centers_m(self, axis: int) -> np.ndarray:
        e = self.edges_m(axis)
        return 0.5 * (e[:-1] + e[1:])

    def centers_m(self, rows: slice | None = None) -> np.ndarray:
        """Cell centres, shape (n_cells, dim) (or the rows of ``rows``)."""
        idx = np.arange(self.n_cells)[rows] if rows is not None else np.arange(self.n_cells)
        sub = np.unravel_index(idx, self.shape)
        return np.stack([self.axis_centers_m(a)[sub[a]] for a in range(self.dim)], axis=1)

    @cached_property
    def _centers(self) -> np.ndarray:
        return self.centers_m()

    def cell_of(self, points_m) -> np.ndarray:
        """Index of the cell holding each point (points on the far edge go to the last cell)."""
        p = np.asarray(points_m, dtype=float)
        sub = []
        for a in range(self.dim):
            if a < p.shape[1]:
                k = np.floor((p[:, a] - self.origin_m[a]) / self.cell_size_m[a]).astype(int)
            else:
                k = np.zeros(p.shape[0], dtype=int)
            sub.append(np.clip(k, 0, self.shape[a] - 1))
        return np.ravel_multi_index(tuple(sub), self.shape)

    def cells_of_centers_in(self, other: "Grid") -> np.ndarray:
        """Index in ``other`` of the cell holding each of this grid's cell centres (n_cells,).

        The same integers as ``other.cell_of(self.centers_m())``, computed axis by axis (the grids are
        both axis-aligned), so no (n_cells, dim) array of centres is made.

        >>> fine = Grid(origin_m=(0.0, 0.0), size_m=(100.0, 50.0), shape=(4, 2))
        >>> coarse = Grid(origin_m=(0.0, 0.0), size_m=(100.0, 50.0), shape=(2, 1))
        >>> fine.cells_of_centers_in(coarse).tolist()
        [0, 0, 0, 0, 1, 1, 1, 1]
        """
        if other.dim != self.dim:
            raise ValueError(f"cells_of_centers_in: grids of {self.dim} and {other.dim} dimensions")
        subs = []
        for a in range(self.dim):
            k = np.floor((self.axis_centers_m(a) - other.origin_m[a]) / other.cell_size_m[a]).astype(int)
            subs.append(np.clip(k, 0, other.shape[a] - 1))
        return np.ravel_multi_index(np.ix_(*subs), other.shape).reshape(-1)


def gaussian_cell_masses(grid: Grid, mean_m, std_m) -> np.ndarray:
    """Exact mass of an axis-aligned Gaussian in each cell, truncated to the zone and normalised.

    Separable: the product over axes of CDF differences at the cell edges.  Axes
    the mean does not give (z in a 3D zone with a 2D mean) are uniform.
    """
    k = len(mean_m)
    std = list(std_m) if isinstance(std_m, (list, tuple)) else [float(std_m)] * k
    out = np.ones(grid.shape)
    for a in range(grid.dim):
        if a < k:
            cdf = ndtr((grid.edges_m(a) - mean_m[a]) / std[a])
            p = np.diff(cdf)
        else:
            p = np.full(grid.shape[a], 1.0 / grid.shape[a])
        tot = p.sum()
        p = p / tot
        shape = [1] * grid.dim
        shape[a] = grid.shape[a]
        out = out * p.reshape(shape)
    return out.ravel()


def density_masses(spec, grid: Grid, base_dir=None) -> np.ndarray:
    """Cell masses (n_cells,) of a validated spatial distribution, summing to 1."""
    if isinstance(spec, GaussianMixture):
        w = np.array([c.weight for c in spec.components], dtype=float)
        w = w / w.sum()
        m = sum(wc * gaussian_cell_masses(grid, c.mean_m, c.std_m) for wc, c in zip(w, spec.components))
    elif isinstance(spec, Uniform):
        m = np.full(grid.n_cells, 1.0)
    elif isinstance(spec, ArrayDensity):
        m = load_array_density(spec, base_dir).ravel().astype(float)
    elif isinstance(spec, PointList):
        m = np.bincount(grid.cell_of(spec.points_m), minlength=grid.n_cells).astype(float)
    else:  # pragma: no cover - validated earlier
        raise TypeError(f"unknown distribution {type(spec).__name__}")
    m = np.asarray(m, dtype=float)
    return m / m.sum()


def sample_positions(spec, grid: Grid, n: int, rng: np.random.Generator, base_dir=None) -> np.ndarray:
    """Draw ``n`` points (n, dim) from a distribution truncated to the zone (rejection per component)."""
    lo = np.array(grid.origin_m)
    hi = lo + np.array(grid.size_m)
    if n == 0:
        return np.zeros((0, grid.dim))
    if isinstance(spec, PointList):
        pts = np.zeros((n, grid.dim))
        for i, p in enumerate(spec.points_m):
            pts[i, : len(p)] = p
            if len(p) < grid.dim:
                pts[i, len(p):] = lo[len(p):] + 0.5 * (hi[len(p):] - lo[len(p):])
        return pts
    if isinstance(spec, Uniform):
        return lo + rng.random((n, grid.dim)) * (hi - lo)
    if isinstance(spec, ArrayDensity):
        m = density_masses(spec, grid, base_dir)
        cells = rng.choice(grid.n_cells, size=n, p=m)
        sub = np.stack(np.unravel_index(cells, grid.shape), axis=1)
        return lo + (sub + rng.random((n, grid.dim))) * np.array(grid.cell_size_m)
    assert isinstance(spec, GaussianMixture)
    w = np.array([c.weight for c in spec.components], dtype=float)
    comp = rng.choice(len(w), size=n, p=w / w.sum())
    pts = np.empty((n, grid.dim))
    for c, spec_c in enumerate(spec.components):
        idx = np.flatnonzero(comp == c)
        k = len(spec_c.mean_m)
        std = np.array(spec_c.std_m if isinstance(spec_c.std_m, list) else [spec_c.std_m] * k)
        mean = np.array(spec_c.mean_m)
        todo = idx
        while todo.size:
            cand = np.empty((todo.size, grid.dim))
            cand[:, :k] = mean + std * rng.standard_normal((todo.size, k))
            if k < grid.dim:
                cand[:, k:] = lo[k:] + rng.random((todo.size, grid.dim - k)) * (hi[k:] - lo[k:])
            ok = np.all((cand >= lo) & (cand <= hi), axis=1)
            pts[todo[ok]] = cand[ok]
            todo = todo[~ok]
    return pts
