"""The sweep result store: one SQLite file, one row per point, safe against kills.

``DIR/results.sqlite`` holds one table, ``points``: the sweep's axis values
(one column per axis, named by its dotted path such as ``twins.count``),
``seed``, ``method``, ``key`` (the PRIMARY KEY: a hash of configuration, seed,
method, method options and package version, see
:func:`edgeverse.points.point_key`), the point's scalar results, its list
results as JSON text, and ``error`` (``None``, or ``"ExceptionType: message"``
for a point that raised).

Only the process that runs the sweep writes; workers return records.  The
database is in WAL mode and each completed point is one transaction
(``INSERT OR IGNORE`` on the key), so a sweep killed at any moment - SIGKILL
included - leaves every committed point whole and nothing else, and a restart
never writes a key twice.  Durability is ``synchronous=NORMAL``: a process
kill loses nothing committed; a power cut may lose the last few points but
never corrupts the file.

Read a store with :func:`load_results` (needs pandas) or
:meth:`ResultStore.rows` (plain dicts, no pandas).
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from .errors import EdgeverseError

DB_NAME = "results.sqlite"
TABLE = "points"

#: Result columns of a point record (:func:`edgeverse.points.run_point`), in table order.
RECORD_COLUMNS = [
    "objective_ms", "n_twins", "n_hosted", "status", "iterations", "wall_time_s", "cell_volume_m3",
    "hotspot_server", "alpha", "server_time_ms", "dt_in_region", "dt_hosted", "region_cells",
]
#: Columns stored as JSON text (lists).
LIST_COLUMNS = ["alpha", "server_time_ms", "dt_in_region", "dt_hosted", "region_cells"]
ID_COLUMNS = ["seed", "method", "key"]


def _q(name: str) -> str:
    """Quote an SQL identifier (axis columns contain dots)."""
    return '"' + name.replace('"', '""') + '"'


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj


def to_json_text(value: Any) -> str:
    """Compact strict JSON (non-finite floats as null)."""
    return json.dumps(_finite(value), separators=(",", ":"), allow_nan=False)


def encode_axis_value(value: Any) -> Any:
    """An axis value as stored in its column: numbers, strings, booleans as they are; lists/dicts as JSON."""
    if isinstance(value, (list, tuple, dict)):
        return to_json_text(value)
    return value


def _scalar(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class ResultStore:
    """The SQLite result store of one sweep folder (the parent process's writer)."""

    def __init__(self, out_dir: str | Path, axes: list[str] | None = None, *, create: bool = True):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / DB_NAME
        if not create and not self.path.exists():
            raise EdgeverseError(f"no sweep results in {str(self.out_dir)!r} (no {DB_NAME}); run `edgeverse sweep` first")
        if create:
            from .errors import ensure_out_dir

            ensure_out_dir(self.out_dir)
        try:
            self.conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=60000")
        except sqlite3.DatabaseError as exc:
            raise EdgeverseError(f"{self.path}: not a readable sweep store ({exc})") from None
        self.axes = self._init_schema(axes) if create else self._read_axes()
        self.columns = self._table_columns()

    # ------------------------------------------------------------------ schema
    def _table_exists(self) -> bool:
        row = self.conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone()
        return row is not None

    def _read_axes(self) -> list[str]:
        if not self._table_exists():
            return []
        row = self.conn.execute("SELECT value FROM meta WHERE name='axes'").fetchone()
        return json.loads(row[0]) if row else []

    def _init_schema(self, axes: list[str] | None) -> list[str]:
        axes = list(axes or [])
        if self._table_exists():
            stored = self._read_axes()
            if stored != axes:
                raise EdgeverseError(
                    f"{self.path} holds a sweep over axes {stored or '(none)'}, not {axes or '(none)'}; "
                    "use another --out folder (a store keeps one set of axis columns)"
                )
            return stored
        cols = [f"{_q(a)}" for a in axes]
        cols += ["seed INTEGER NOT NULL", "method TEXT NOT NULL", "key TEXT PRIMARY KEY NOT NULL"]
        cols += [_q(c) for c in RECORD_COLUMNS] + ["error TEXT"]
        with self.conn:  # one transaction: both tables or neither
            self.conn.execute("BEGIN IMMEDIATE")
            if not self._table_exists():
                self.conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('axes', ?)", (json.dumps(axes),))
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('list_columns', ?)", (json.dumps(LIST_COLUMNS),))
                self.conn.execute(f"CREATE TABLE {TABLE} ({', '.join(cols)})")
        return self._read_axes()

    def _table_columns(self) -> list[str]:
        if not self._table_exists():
            return []
        return [r[1] for r in self.conn.execute(f"PRAGMA table_info({TABLE})")]

    def list_columns(self) -> list[str]:
        row = self.conn.execute("SELECT value FROM meta WHERE name='list_columns'").fetchone() if self._table_exists() else None
        return json.loads(row[0]) if row else list(LIST_COLUMNS)

    # ------------------------------------------------------------------ reading
    def keys(self) -> set[str]:
        """Keys of every stored point."""
        if not self._table_exists():
            return set()
        return {r[0] for r in self.conn.execute(f"SELECT key FROM {TABLE}")}

    def error_keys(self) -> set[str]:
        if not self._table_exists():
            return set()
        return {r[0] for r in self.conn.execute(f"SELECT key FROM {TABLE} WHERE error IS NOT NULL")}

    def count(self) -> int:
        if not self._table_exists():
            return 0
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0])

    def rows(self, *, decode: bool = True) -> list[dict[str, Any]]:
        """Every stored point as a dict (list columns decoded from JSON when ``decode``), in storage order."""
        if not self._table_exists():
            return []
        cur = self.conn.execute(f"SELECT * FROM {TABLE}")
        names = [d[0] for d in cur.description]
        lists = set(self.list_columns()) if decode else set()
        out = []
        for r in cur:
            row = dict(zip(names, r))
            for c in lists:
                if row.get(c) is not None:
                    row[c] = json.loads(row[c])
            out.append(row)
        return out

    # ------------------------------------------------------------------ writing
    def add(self, axis_values: dict[str, Any], record: dict[str, Any], key: str) -> bool:
        """Write one completed point in its own transaction; False if its key was already stored."""
        row: dict[str, Any] = {a: encode_axis_value(axis_values[a]) for a in self.axes}
        row["seed"] = int(record["seed"])
        row["method"] = str(record["method"])
        row["key"] = key
        lists = set(self.list_columns())
        for name, value in record.items():
            if name in ("seed", "method", "key") or name in self.axes:
                continue
            if isinstance(value, (list, tuple, dict)) or name in lists:
                row[name] = None if value is None else to_json_text(value)
            else:
                row[name] = _scalar(value)
        missing = [c for c in row if c not in self.columns]
        names = list(row)
        sql = (f"INSERT OR IGNORE INTO {TABLE} ({', '.join(_q(c) for c in names)}) "
               f"VALUES ({', '.join('?' for _ in names)})")
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            for c in missing:  # a newer record field: grow the table (inside the same transaction)
                self.conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {_q(c)}")
            cur = self.conn.execute(sql, [row[c] for c in names])
        if missing:
            self.columns = self._table_columns()
        return cur.rowcount == 1

    def delete(self, keys: Iterable[str]) -> int:
        keys = list(keys)
        if not keys:
            return 0
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            n = 0
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                cur = self.conn.execute(f"DELETE FROM {TABLE} WHERE key IN ({', '.join('?' for _ in chunk)})", chunk)
                n += cur.rowcount
        return n

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load_results(out_dir: str | Path, *, keys: Iterable[str] | None = None, decode_lists: bool = True):
    """The results of a sweep folder as one :class:`pandas.DataFrame`.

    One row per point; columns: the axes (named by dotted path), ``seed``,
    ``method``, ``key``, the results (``objective_ms``, ``n_hosted``, ...),
    list results (``alpha``, ``server_time_ms``, ...) as Python lists (JSON
    text if ``decode_lists=False``) and ``error`` (``None`` unless the point
    raised).  Rows are sorted by (axes..., method, seed), so the table does not
    depend on the order in which points completed.  ``keys`` restricts the
    table to those points (e.g. the points of one sweep file).

    Needs pandas (``pip install edgeverse[pandas]``)::

        from edgeverse.sweep import load_results
        df = load_results("out/sweep_k")
        df.groupby(["twins.count", "method"]).objective_ms.mean()
    """
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - depends on the environment
        raise EdgeverseError("load_results needs pandas: pip install edgeverse[pandas]") from None
    with ResultStore(out_dir, create=False) as store:
        rows = store.rows(decode=decode_lists)
        axes = list(store.axes)
        columns = store.columns
    if keys is not None:
        wanted = set(keys)
        rows = [r for r in rows if r["key"] in wanted]
    for a in axes:  # an axis mixing lists (stored as JSON text) and numbers: all its values as JSON text,
        vals = [r.get(a) for r in rows]  # so that the column has one type (and sorts without mixing them)
        if any(isinstance(v, str) and v.startswith(("[", "{")) for v in vals) and any(
                v is not None and not isinstance(v, str) for v in vals):
            for r in rows:
                if r.get(a) is not None and not isinstance(r[a], str):
                    r[a] = to_json_text(r[a])
    df = pd.DataFrame(rows, columns=columns)
    order = [c for c in axes + ["method", "seed"] if c in df.columns]
    if len(df) and order:
        df = df.sort_values(order, kind="mergesort")
    return df.reset_index(drop=True)
