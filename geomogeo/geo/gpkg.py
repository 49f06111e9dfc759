"""In-place, transactional writes into an existing GeoPackage, at the SQLite level.

A GeoPackage is an SQLite database, so the safe way for several writers to add features to one
file is SQLite's own: open the file in place, take the write lock (``BEGIN IMMEDIATE``, waiting
up to a busy timeout while another connection writes), insert, ``COMMIT``. That gives, without
any lock of our own:

- *Serialised writers*: two processes (or threads) never write at the same time; the second one
  waits for the first to commit, then sees its rows. Nothing is lost.
- *Crash safety*: the rollback journal (or the WAL, if the file is in WAL mode) makes a commit
  all-or-nothing; a process killed mid-write leaves the file as it was before that write, and
  the next connection rolls the hot journal back.
- *Readers are never disturbed*: the file is never replaced, so a GIS desktop that has it open
  (WAL mode included, with committed pages not yet checkpointed) keeps a valid view, and a
  symbolic link to the file stays a link.

The features themselves are encoded by GDAL: the caller has GDAL write the new frames to a
*staged* GeoPackage in memory (its bytes) and :meth:`GeoPackageTransaction.merge` copies its
rows and, for layers the file does not have yet, the layer's tables, triggers, R-tree and
metadata rows, inside the one transaction. Binary geometries are copied as they are, except the
SRS id in their header when the two files number the same CRS differently. Staging happens
before the lock is taken, so the lock is held only for the copy.

Only Python's :mod:`sqlite3` touches the target while the transaction is open. This matters:
SQLite's locks are POSIX ``fcntl`` locks, which belong to the process and are ALL dropped when
the process closes ANY descriptor of the file. Opening the target with GDAL (a second SQLite
library inside this process) or a plain ``open()`` while a write is in progress would silently
release the write lock.

The R-tree triggers GDAL creates call the GeoPackage SQL functions ``ST_IsEmpty``,
``ST_MinX``/``MaxX``/``MinY``/``MaxY``; they are registered on the connection (read from the
GeoPackage binary header's envelope, or from the WKB when it has none) so the spatial index is
maintained exactly as GDAL would.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import shapely
from pyproj import CRS

from geomogeo.errors import OutputError

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "GeoPackageTransaction",
    "LayerInfo",
    "ogr_type_name",
    "read_layers",
    "write_transaction",
]

logger = logging.getLogger(__name__)

#: How long a writer waits for another connection's write lock before giving up (seconds).
DEFAULT_BUSY_TIMEOUT_S = 60.0

# Byte sizes of the envelope after the 8-byte GeoPackage binary header, by envelope indicator.
_ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}

# Column type families (declared SQLite types as GDAL writes them) used to check appends.
_FAMILIES = {
    "INTEGER": "integer", "INT": "integer", "MEDIUMINT": "integer", "SMALLINT": "integer",
    "TINYINT": "integer", "BOOLEAN": "boolean", "REAL": "real", "FLOAT": "real",
    "DOUBLE": "real", "TEXT": "text", "DATETIME": "datetime", "DATE": "date", "BLOB": "blob",
}


_OGR_NAMES = {
    "GEOMETRY": "Geometry", "POINT": "Point", "LINESTRING": "LineString", "POLYGON": "Polygon",
    "MULTIPOINT": "MultiPoint", "MULTILINESTRING": "MultiLineString",
    "MULTIPOLYGON": "MultiPolygon", "GEOMETRYCOLLECTION": "GeometryCollection",
}


def ogr_type_name(gpkg_name: str) -> str:
    """OGR's spelling of a GeoPackage geometry type: ``"MULTIPOLYGON"`` -> ``"MultiPolygon"``."""
    return _OGR_NAMES.get(gpkg_name.upper(), gpkg_name)


def _family(declared: str) -> str:
    return _FAMILIES.get(declared.split("(")[0].strip().upper(), declared.upper())


def _storable(new: str, old: str) -> bool:
    """Whether values of type family ``new`` can be stored in a column of family ``old``."""
    return new == old or old == "text" or (new in ("integer", "boolean") and old == "real")


def _q(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------- geometry blobs


def _header(blob: bytes) -> tuple[int, int]:
    """(flags byte, header length in bytes) of a GeoPackage binary geometry."""
    if len(blob) < 8 or blob[:2] != b"GP":
        raise ValueError("not a GeoPackage binary geometry")
    flags = blob[3]
    return flags, 8 + _ENVELOPE_BYTES[(flags >> 1) & 0x07]


def _bounds(blob: bytes | None) -> tuple[float, float, float, float] | None:
    """(minx, maxx, miny, maxy) of a GeoPackage geometry: its envelope, else from the WKB."""
    if blob is None:
        return None
    flags, size = _header(blob)
    if size > 8:
        fmt = "<4d" if flags & 1 else ">4d"
        return struct.unpack(fmt, blob[8:40])
    geom = shapely.from_wkb(bytes(blob[size:]))
    if geom is None or geom.is_empty:
        return None
    minx, miny, maxx, maxy = geom.bounds
    return minx, maxx, miny, maxy


def _st_is_empty(blob: bytes | None) -> int | None:
    if blob is None:
        return None
    flags, _ = _header(blob)
    return int(bool(flags & 0x10))


def _st_bound(i: int) -> Callable[[bytes | None], float | None]:
    def fn(blob: bytes | None) -> float | None:
        b = _bounds(blob)
        return None if b is None else b[i]

    return fn


def _with_srs_id(blob: bytes | None, srs_id: int) -> bytes | None:
    """The same geometry with ``srs_id`` written into its header (in the header's byte order)."""
    if blob is None:
        return None
    flags, _ = _header(blob)
    return bytes(blob[:4]) + struct.pack("<i" if flags & 1 else ">i", srs_id) + bytes(blob[8:])


def _register_functions(con: sqlite3.Connection) -> None:
    con.create_function("ST_IsEmpty", 1, _st_is_empty, deterministic=True)
    for i, name in enumerate(("ST_MinX", "ST_MaxX", "ST_MinY", "ST_MaxY")):
        con.create_function(name, 1, _st_bound(i), deterministic=True)


# --------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class LayerInfo:
    """One feature layer of a GeoPackage (from ``gpkg_contents``/``gpkg_geometry_columns``)."""

    table: str  #: the table name as stored (SQLite compares names case-insensitively)
    geometry_column: str
    geometry_type: str  #: e.g. ``"POLYGON"``, ``"MULTIPOLYGON"``, ``"GEOMETRY"``
    srs_id: int
    crs: CRS | None  #: None when the SRS is undefined (srs_id 0 or -1) or unreadable
    columns: dict[str, str]  #: attribute column -> declared SQLite type (no fid, no geometry)
    fid_column: str | None


def _table_columns(con: sqlite3.Connection, schema: str, table: str) -> list[tuple]:
    return con.execute(f"PRAGMA {schema}.table_info({_q(table)})").fetchall()


def _srs_crs(con: sqlite3.Connection, srs_id: int) -> CRS | None:
    row = con.execute(
        "SELECT organization, organization_coordsys_id, definition FROM gpkg_spatial_ref_sys "
        "WHERE srs_id = ?", (srs_id,)).fetchone()
    if row is None or srs_id in (0, -1):
        return None
    org, code, definition = row
    with contextlib.suppress(Exception):
        if str(org).upper() == "EPSG":
            return CRS.from_epsg(int(code))
        return CRS.from_user_input(definition)
    return None


def _feature_layers(con: sqlite3.Connection) -> dict[str, LayerInfo]:
    """Feature layers keyed by lower-case table name."""
    rows = con.execute(
        "SELECT c.table_name, g.column_name, g.geometry_type_name, g.srs_id "
        "FROM gpkg_contents c JOIN gpkg_geometry_columns g "
        "ON lower(c.table_name) = lower(g.table_name) WHERE c.data_type = 'features'").fetchall()
    out = {}
    for table, geom_col, gtype, srs_id in rows:
        cols = _table_columns(con, "main", table)
        fid = next((c[1] for c in cols if c[5] == 1), None)
        attrs = {c[1]: c[2] for c in cols
                 if c[1] != fid and c[1].lower() != geom_col.lower()}
        out[table.lower()] = LayerInfo(table, geom_col, str(gtype).upper(), int(srs_id),
                                       _srs_crs(con, int(srs_id)), attrs, fid)
    return out


class GeoPackageTransaction:
    """An open write transaction on a GeoPackage (see :func:`write_transaction`)."""

    def __init__(self, con: sqlite3.Connection, path: Path) -> None:
        self._con = con
        self.path = path
        self.layers: dict[str, LayerInfo] = _feature_layers(con)

    @property
    def user_version(self) -> int:
        """SQLite ``user_version``: the GeoPackage version, e.g. 10300 for 1.3."""
        return int(self._con.execute("PRAGMA user_version").fetchone()[0])

    def _fail(self, msg: str) -> OutputError:
        return OutputError(f"cannot write {str(self.path)!r}: {msg}")

    def clear(self) -> None:
        """Delete every feature and attribute layer (tables, R-trees, metadata rows).

        Raises:
            OutputError: the file also holds other content (e.g. raster tiles); nothing is
                deleted then.
        """
        con = self._con
        kinds = {r[0] for r in con.execute("SELECT DISTINCT data_type FROM gpkg_contents")}
        other = sorted(kinds - {"features", "attributes"})
        if other:
            raise self._fail(f"it holds {other} content; it will not be replaced by features "
                             "(choose another file name or delete it yourself)")
        tables = [r[0] for r in con.execute("SELECT table_name FROM gpkg_contents")]
        meta = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in tables:
            if "gpkg_extensions" in meta:
                indexed = con.execute(
                    "SELECT column_name FROM gpkg_extensions WHERE lower(table_name) = lower(?) "
                    "AND extension_name = 'gpkg_rtree_index'", (table,)).fetchall()
                for (column,) in indexed:
                    con.execute(f"DROP TABLE IF EXISTS {_q(f'rtree_{table}_{column}')}")
            con.execute(f"DROP TABLE IF EXISTS {_q(table)}")
            for bookkeeping in ("gpkg_geometry_columns", "gpkg_extensions", "gpkg_ogr_contents",
                                "gpkg_data_columns", "gpkg_metadata_reference",
                                "gpkg_contents"):
                if bookkeeping in meta:
                    con.execute(f"DELETE FROM {bookkeeping} WHERE lower(table_name) = lower(?)",
                                (table,))
        self.layers = {}
        logger.debug("cleared %d layer(s) of %s", len(tables), self.path)

    def merge(self, staged: bytes) -> dict[str, int]:
        """Copy every feature layer of the ``staged`` GeoPackage (the file's bytes) into this one.

        Layers that exist (names compared case-insensitively) get the staged features appended:
        same CRS, a compatible geometry type (the layer's type, or ``GEOMETRY``) and every
        staged column present in the layer with a storable type (same type; integers into
        REAL; anything into TEXT). Other layers are created as GDAL created them in
        ``staged``. Feature ids are assigned by the target.

        Returns:
            ``{layer name: number of features added}``.

        Raises:
            OutputError: a staged layer cannot be appended; the caller must roll back.
        """
        con = self._con
        src = sqlite3.connect(":memory:")
        try:
            try:
                src.deserialize(staged)
                staged_layers = _feature_layers(src)
            except sqlite3.DatabaseError as exc:
                raise OutputError(f"cannot write {str(self.path)!r}: the staged features are "
                                  f"not a GeoPackage ({exc})") from exc
            added = {}
            for name, info in staged_layers.items():
                existing = self.layers.get(name)
                if existing is None:
                    self._create_layer(src, info)
                    existing = _feature_layers(con)[name]
                    self.layers[name] = existing
                else:
                    self._check_compatible(src, info, existing)
                added[info.table] = self._copy_rows(src, info, existing)
            return added
        finally:
            src.close()

    # ---- helpers ---------------------------------------------------------------------
    def _check_compatible(self, src: sqlite3.Connection, new: LayerInfo, old: LayerInfo) -> None:
        where = f"cannot append to layer {old.table!r} of {str(self.path)!r}"
        if old.crs is None or new.crs is None or not old.crs.equals(new.crs):
            raise OutputError(
                f"{where}: its CRS is {old.crs.to_string() if old.crs else 'undefined'} but the "
                f"new features are in {new.crs.to_string() if new.crs else 'undefined'}; "
                "write them to another layer or file")
        n_new = src.execute(f"SELECT count(*) FROM {_q(new.table)}").fetchone()[0]
        if n_new and old.geometry_type != "GEOMETRY" and new.geometry_type != old.geometry_type:
            raise OutputError(f"{where}: it holds {ogr_type_name(old.geometry_type)} geometries "
                              f"but the new features are {ogr_type_name(new.geometry_type)}")
        old_cols = {c.lower(): (c, t) for c, t in old.columns.items()}
        extra = [c for c in new.columns if c.lower() not in old_cols]
        if extra:
            raise OutputError(f"{where}: columns {extra} are not in the layer (it has "
                              f"{sorted(old.columns)}); write them to another layer or file")
        for col, declared in new.columns.items():
            has_values = src.execute(
                f"SELECT count({_q(col)}) FROM {_q(new.table)}").fetchone()[0]
            old_name, old_type = old_cols[col.lower()]
            if has_values and not _storable(_family(declared), _family(old_type)):
                raise OutputError(
                    f"{where}: column {old_name!r} is {old_type} in the layer but the new "
                    f"values are {declared}; convert them or write to another layer")

    def _srs_for(self, src: sqlite3.Connection, info: LayerInfo) -> int:
        """The target's srs_id for the staged layer's CRS, inserting the SRS if missing."""
        con = self._con
        for (srs_id,) in con.execute("SELECT srs_id FROM gpkg_spatial_ref_sys").fetchall():
            crs = _srs_crs(con, srs_id)
            if crs is not None and info.crs is not None and crs.equals(info.crs):
                return int(srs_id)
        row_cols = [c[1] for c in _table_columns(src, "main", "gpkg_spatial_ref_sys")]
        tgt_cols = {c[1] for c in _table_columns(con, "main", "gpkg_spatial_ref_sys")}
        cols = [c for c in row_cols if c in tgt_cols]
        row = dict(zip(cols, src.execute(
            f"SELECT {', '.join(map(_q, cols))} FROM gpkg_spatial_ref_sys WHERE srs_id = ?",
            (info.srs_id,)).fetchone(), strict=True))
        taken = con.execute("SELECT 1 FROM gpkg_spatial_ref_sys WHERE srs_id = ?",
                            (info.srs_id,)).fetchone()
        if taken:
            row["srs_id"] = max(100000, con.execute(
                "SELECT max(srs_id) FROM gpkg_spatial_ref_sys").fetchone()[0] + 1)
        con.execute(f"INSERT INTO gpkg_spatial_ref_sys ({', '.join(map(_q, cols))}) "
                    f"VALUES ({', '.join('?' * len(cols))})", [row[c] for c in cols])
        return int(row["srs_id"])

    def _create_layer(self, src: sqlite3.Connection, info: LayerInfo) -> None:
        """Create ``info``'s table, R-tree, triggers and metadata rows as in ``src``, empty."""
        con = self._con
        srs_id = self._srs_for(src, info)
        tgt_tables = {r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        ext_rows = src.execute("SELECT * FROM gpkg_extensions WHERE lower(table_name) = "
                               "lower(?)", (info.table,)).fetchall()
        rtrees = [f"rtree_{info.table}_{r[1]}" for r in ext_rows if r[2] == "gpkg_rtree_index"]
        marks = ", ".join("?" * len(rtrees))
        objects = src.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND "
            f"(lower(tbl_name) = lower(?) OR name IN ({marks}))", (info.table, *rtrees)).fetchall()
        has_counts = "gpkg_ogr_contents" in tgt_tables
        # Tables first, then indexes and triggers (which refer to them).
        for kind in ("table", "index", "trigger"):
            for obj_type, _name, sql in objects:
                if obj_type != kind or (not has_counts and "gpkg_ogr_contents" in sql):
                    continue
                con.execute(sql)
        self._copy_meta(src, "gpkg_contents", info.table, srs_id)
        self._copy_meta(src, "gpkg_geometry_columns", info.table, srs_id)
        if ext_rows:
            if "gpkg_extensions" not in tgt_tables:
                con.execute(src.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND "
                                        "name = 'gpkg_extensions'").fetchone()[0])
            self._copy_meta(src, "gpkg_extensions", info.table, srs_id)
        if has_counts:
            con.execute("INSERT INTO gpkg_ogr_contents (table_name, feature_count) VALUES (?, 0)",
                        (info.table,))
        logger.debug("created layer %r in %s", info.table, self.path)

    def _copy_meta(self, src: sqlite3.Connection, table: str, layer: str, srs_id: int) -> None:
        cols = [c[1] for c in _table_columns(src, "main", table)]
        tgt = {c[1] for c in _table_columns(self._con, "main", table)}
        cols = [c for c in cols if c in tgt]
        for row in src.execute(f"SELECT {', '.join(map(_q, cols))} FROM {table} "
                               "WHERE lower(table_name) = lower(?)", (layer,)).fetchall():
            values = dict(zip(cols, row, strict=True))
            if "srs_id" in values:
                values["srs_id"] = srs_id
            self._con.execute(f"INSERT INTO {table} ({', '.join(map(_q, cols))}) "
                              f"VALUES ({', '.join('?' * len(cols))})", list(values.values()))

    def _copy_rows(self, src: sqlite3.Connection, new: LayerInfo, old: LayerInfo) -> int:
        con = self._con
        old_names = {c.lower(): c for c in old.columns}
        src_cols = [new.geometry_column, *new.columns]
        dst_cols = [old.geometry_column, *(old_names[c.lower()] for c in new.columns)]
        fix_srs = new.srs_id != old.srs_id
        before = con.execute(f"SELECT count(*) FROM {_q(old.table)}").fetchone()[0]
        cur = src.execute(f"SELECT {', '.join(map(_q, src_cols))} FROM {_q(new.table)} "
                          f"ORDER BY {_q(new.fid_column or 'rowid')}")
        rows = ((_with_srs_id(r[0], old.srs_id), *r[1:]) if fix_srs else r for r in cur)
        con.executemany(f"INSERT INTO {_q(old.table)} ({', '.join(map(_q, dst_cols))}) "
                        f"VALUES ({', '.join('?' * len(dst_cols))})", rows)
        n = con.execute(f"SELECT count(*) FROM {_q(old.table)}").fetchone()[0] - before
        self._update_extent(src, new, old, had_features=before > 0)
        return int(n)

    def _update_extent(self, src: sqlite3.Connection, new: LayerInfo, old: LayerInfo,
                       *, had_features: bool) -> None:
        """Union the layer's extent in ``gpkg_contents`` with the staged one; stamp the time."""
        con = self._con
        ext = ("min_x", "min_y", "max_x", "max_y")
        new_ext = src.execute(f"SELECT {', '.join(ext)} FROM gpkg_contents "
                              "WHERE lower(table_name) = lower(?)", (new.table,)).fetchone()
        old_ext = con.execute(f"SELECT {', '.join(ext)} FROM gpkg_contents "
                              "WHERE lower(table_name) = lower(?)", (old.table,)).fetchone()
        merged: tuple | None
        if new_ext is None or any(v is None for v in new_ext):
            merged = old_ext if had_features else new_ext
        elif any(v is None for v in old_ext):
            # An unknown extent of a non-empty layer stays unknown (readers compute it).
            merged = old_ext if had_features else new_ext
        else:
            merged = (min(old_ext[0], new_ext[0]), min(old_ext[1], new_ext[1]),
                      max(old_ext[2], new_ext[2]), max(old_ext[3], new_ext[3]))
        if merged is not None and any(v is not None and not math.isfinite(v) for v in merged):
            merged = (None, None, None, None)
        con.execute("UPDATE gpkg_contents SET min_x = ?, min_y = ?, max_x = ?, max_y = ?, "
                    "last_change = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                    "WHERE lower(table_name) = lower(?)", (*(merged or (None,) * 4), old.table))


def read_layers(path: str | Path) -> dict[str, LayerInfo]:
    """Feature layers of the GeoPackage ``path`` (keyed by lower-case name), read-only.

    A snapshot without a lock, for planning a write; :func:`write_transaction` reads them again
    under the lock. Returns ``{}`` when the file is missing or not a GeoPackage.
    """
    try:
        con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}
    try:
        return _feature_layers(con) if _is_geopackage(con) else {}
    except sqlite3.Error:
        return {}
    finally:
        con.close()


def _is_geopackage(con: sqlite3.Connection) -> bool:
    row = con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                      "('gpkg_contents', 'gpkg_geometry_columns', 'gpkg_spatial_ref_sys')"
                      ).fetchone()
    return bool(row and row[0] == 3)


@contextlib.contextmanager
def write_transaction(
    path: str | Path, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
) -> Iterator[GeoPackageTransaction]:
    """Open the existing GeoPackage ``path`` in place and hold its write lock.

    Waits up to ``busy_timeout_s`` seconds for other writers. The transaction commits when the
    block ends normally and rolls back (leaving the file as it was) when it raises. The file
    keeps its journal mode (WAL stays WAL) and its GeoPackage version; it is never created.

    Raises:
        OutputError: the file is not a GeoPackage (or not an SQLite database), stays locked by
            another connection for longer than the timeout, or cannot be written.
    """
    target = Path(path)
    uri = f"file:{quote(str(target))}?mode=rw"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None)
    except sqlite3.Error as exc:
        raise OutputError(f"cannot open {str(target)!r} for writing: {exc}") from exc
    try:
        _register_functions(con)
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise OutputError(
                    f"cannot write {str(target)!r}: another program holds its write lock for "
                    f"more than {busy_timeout_s:g} s ({exc}); close it or retry") from exc
            raise OutputError(f"cannot write {str(target)!r}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise OutputError(f"cannot append to {str(target)!r}: it exists but is not a "
                              f"GeoPackage ({exc}); choose another file name") from exc
        try:
            try:
                ok = _is_geopackage(con)
            except sqlite3.DatabaseError as exc:
                raise OutputError(f"cannot append to {str(target)!r}: it exists but is not a "
                                  f"GeoPackage ({exc}); choose another file name") from exc
            if not ok:
                raise OutputError(f"cannot append to {str(target)!r}: it exists but is not a "
                                  "GeoPackage (no gpkg_contents, gpkg_geometry_columns and "
                                  "gpkg_spatial_ref_sys tables); choose another file name")
            yield GeoPackageTransaction(con, target)
            con.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise OutputError(f"cannot write {str(target)!r}: {exc}") from exc
            raise
    finally:
        con.close()
