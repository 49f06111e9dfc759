"""Safe GeoPackage writes: concurrent appends, a reader/editor holding the file, kill -9,
symbolic links, leftovers of killed writes. Checked with SQLite's ``integrity_check``, Debian's
``ogrinfo`` (GDAL 3.6) and GDAL's ``validate_gpkg.py``.

The writers are separate processes (``gpkg_writer.py``) started together through a "go" file.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gpkg_writer import frames
from oracles import ogrinfo_summary, validate_gpkg

from geomogeo.geo import export
from geomogeo.geo.export import write_geojson, write_geopackage

WRITER = Path(__file__).with_name("gpkg_writer.py")
N_WORKERS, N_APPENDS, BATCH = 4, 10, 2


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _start(gpkg: Path, worker: int, appends: int, batch: int, go: Path,
           *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(gpkg), str(worker), str(appends), str(batch),
         str(go), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def _rows(gpkg: Path, layer: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{gpkg}?mode=ro", uri=True)
    try:
        return con.execute(f'SELECT worker, seq FROM "{layer}"').fetchall()
    finally:
        con.close()


def _integrity(gpkg: Path) -> str:
    con = sqlite3.connect(f"file:{gpkg}?mode=ro", uri=True)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def _run_workers(gpkg: Path, go: Path) -> None:
    procs = [_start(gpkg, w, N_APPENDS, BATCH, go) for w in range(N_WORKERS)]
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        assert out.split()[-1] == str(N_APPENDS)


def _check_all_rows(gpkg: Path, extra_targets: int = 0) -> None:
    expected = sorted((w, s) for w in range(N_WORKERS) for s in range(N_APPENDS))
    targets = [r for r in _rows(gpkg, "targets") if r[0] is not None]
    assert sorted(targets) == sorted(expected * BATCH)
    assert sorted(_rows(gpkg, "photo")) == expected
    assert _integrity(gpkg) == "ok"
    s = ogrinfo_summary(gpkg, "targets")
    assert s.stderr == ""
    assert s.feature_count == N_WORKERS * N_APPENDS * BATCH + extra_targets
    # every written square lies in x [X0, X0 + 10 * (N_APPENDS - 1) + 2], y [Y0, ...]
    x0, y0 = 431_000.0, 4_582_000.0
    assert s.extent == pytest.approx(
        (x0, y0, x0 + 10 * (N_APPENDS - 1) + 2, y0 + 10 * (N_WORKERS - 1) + 2.5 * (BATCH - 1) + 2),
        abs=1e-9)
    assert ogrinfo_summary(gpkg, "photo").feature_count == N_WORKERS * N_APPENDS
    validate_gpkg(gpkg)


def test_parallel_creators_and_appenders_lose_nothing(tmp_path: Path) -> None:
    """4 processes x 10 appends into a file that does not exist yet: they race to create it
    (the losers append), then append concurrently while a reader polls the file."""
    gpkg = tmp_path / "targets.gpkg"
    go = tmp_path / "go"
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            if gpkg.exists():
                try:
                    con = sqlite3.connect(f"file:{gpkg}?mode=ro", uri=True, timeout=30)
                    try:
                        seen.append(con.execute("SELECT count(*) FROM targets").fetchone()[0])
                    finally:
                        con.close()
                except sqlite3.OperationalError as exc:  # pragma: no cover - reported below
                    errors.append(exc)
            time.sleep(0.01)

    t = threading.Thread(target=reader)
    t.start()
    try:
        _run_workers(gpkg, go)
    finally:
        stop.set()
        t.join()
    assert errors == []
    assert seen and seen == sorted(seen)  # the reader saw whole appends only, in order
    assert all(n % BATCH == 0 for n in seen)
    _check_all_rows(gpkg)
    con = sqlite3.connect(gpkg)
    assert con.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47  # 'GPKG'
    assert con.execute("PRAGMA user_version").fetchone()[0] == 10300
    con.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "targets.gpkg"]


def test_appends_while_an_editor_holds_committed_wal_pages(tmp_path: Path) -> None:
    """A GIS editor has the file open in WAL mode with a committed, not checkpointed edit; four
    processes append meanwhile. The edit survives, the editor can keep editing, and the file
    stays valid (the old copy-and-rename writer broke exactly this)."""
    gpkg = tmp_path / "targets.gpkg"
    write_geopackage(gpkg, frames(-1, -1, 1))  # an existing layer with one feature
    editor = sqlite3.connect(gpkg, isolation_level=None)
    try:
        assert editor.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        editor.execute("PRAGMA wal_autocheckpoint=0")
        # GDAL-based editors provide the GeoPackage SQL functions the R-tree triggers name; the
        # edits below have no geometry, so these stand-ins are never asked for a value.
        for fn in ("ST_IsEmpty", "ST_MinX", "ST_MaxX", "ST_MinY", "ST_MaxY"):
            editor.create_function(fn, 1, lambda blob: None)
        editor.execute("BEGIN")
        editor.execute("INSERT INTO targets (photo) VALUES ('edited in QGIS')")
        editor.execute("COMMIT")
        assert Path(f"{gpkg}-wal").stat().st_size > 0  # the edit lives in the WAL only
        _run_workers(gpkg, tmp_path / "go")
        editor.execute("INSERT INTO targets (photo) VALUES ('second edit')")
        photos = [r[0] for r in editor.execute("SELECT photo FROM targets WHERE worker IS NULL")]
        assert photos == ["edited in QGIS", "second edit"]
        assert editor.execute("SELECT count(*) FROM targets").fetchone()[0] == (
            N_WORKERS * N_APPENDS * BATCH + 3)
    finally:
        editor.close()
    con = sqlite3.connect(gpkg)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # kept, not reset
    con.close()
    rows = _rows(gpkg, "targets")
    assert rows.count((None, None)) == 2 and rows.count((-1, -1)) == 1
    assert sorted(r for r in rows if r[0] is not None and r[0] >= 0) == sorted(
        [(w, s) for w in range(N_WORKERS) for s in range(N_APPENDS)] * BATCH)
    assert _integrity(gpkg) == "ok"
    s = ogrinfo_summary(gpkg, "targets")
    assert s.stderr == "" and s.feature_count == N_WORKERS * N_APPENDS * BATCH + 3
    validate_gpkg(gpkg)


def _read_line(proc: subprocess.Popen[str], want: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(want):
            return line
        if line == "" and proc.poll() is not None:
            raise AssertionError(f"writer exited ({proc.returncode}): {proc.stderr.read()}")
    raise AssertionError(f"writer did not print {want!r} in {timeout} s")


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def _kill_inside(gpkg: Path, go: Path, worker: int) -> int:
    """Start a writer that pauses inside its first write, SIGKILL it there; its pid."""
    proc = _start(gpkg, worker, 1, 2000, go, "pause")
    try:
        _read_line(proc, "inside")  # rows inserted, not committed
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


def test_kill_9_inside_a_write_leaves_a_valid_file(tmp_path: Path) -> None:
    gpkg = tmp_path / "targets.gpkg"
    go = tmp_path / "go"
    go.touch()
    # Killed while building a new file: the name was never published, a temp file remains.
    pid = _kill_inside(gpkg, go, 6)
    assert not gpkg.exists()
    leftovers = _temps(tmp_path)
    assert leftovers and all(f"-{pid}-" in n for n in leftovers)
    write_geopackage(gpkg, frames(7, 0, 3))  # ... and the next write removes it
    assert _temps(tmp_path) == []

    # Killed inside the transaction of an append: a hot journal, the file as before.
    _kill_inside(gpkg, go, 8)
    assert Path(f"{gpkg}-journal").exists()
    write_geopackage(gpkg, frames(7, 1, 3))  # rolls the journal back, then appends
    assert sorted(_rows(gpkg, "targets")) == [(7, 0)] * 3 + [(7, 1)] * 3
    assert sorted(_rows(gpkg, "photo")) == [(7, 0), (7, 1)]
    assert _integrity(gpkg) == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "targets.gpkg"]
    assert ogrinfo_summary(gpkg, "targets").stderr == ""
    validate_gpkg(gpkg)


@pytest.mark.parametrize("delay_s", [0.05, 0.3, 0.9])
def test_kill_9_at_any_moment_keeps_whole_appends(tmp_path: Path, delay_s: float) -> None:
    """SIGKILL at an arbitrary moment of a loop of large appends: every append is all or
    nothing, whatever the moment."""
    gpkg = tmp_path / "targets.gpkg"
    go = tmp_path / "go"
    go.touch()
    batch = 1500
    proc = _start(gpkg, 3, 0, batch, go)
    try:
        _read_line(proc, "appended 1")
        time.sleep(delay_s)
        os.kill(proc.pid, signal.SIGKILL)
        out = proc.stdout.read()
    finally:
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
    reported = 1 + out.count("appended")
    n = len(_rows(gpkg, "targets"))
    assert n % batch == 0 and n // batch in (reported, reported + 1)
    assert len(_rows(gpkg, "photo")) == n // batch
    assert _integrity(gpkg) == "ok"
    write_geopackage(gpkg, frames(3, 999, 1))
    assert len(_rows(gpkg, "targets")) == n + 1
    assert _temps(tmp_path) == []
    validate_gpkg(gpkg)


def test_symlinked_outputs_are_written_through(tmp_path: Path) -> None:
    data = tmp_path / "data"
    work = tmp_path / "work"
    data.mkdir()
    work.mkdir()
    link = work / "targets.gpkg"
    link.symlink_to(data / "real.gpkg")  # dangling: the first write creates the real file
    write_geopackage(link, frames(0, 0, 2))
    write_geopackage(link, frames(0, 1, 2))
    assert link.is_symlink() and os.readlink(link) == str(data / "real.gpkg")
    assert sorted(_rows(data / "real.gpkg", "targets")) == [(0, 0), (0, 0), (0, 1), (0, 1)]
    gj_link = work / "t.geojson"
    gj_link.symlink_to(data / "t.geojson")
    write_geojson(gj_link, frames(0, 0, 2)["targets"])
    write_geojson(gj_link, frames(0, 1, 3)["targets"])
    assert gj_link.is_symlink()
    assert ogrinfo_summary(data / "t.geojson", "t").feature_count == 3
    assert sorted(p.name for p in work.iterdir()) == ["t.geojson", "targets.gpkg"]
    assert sorted(p.name for p in data.iterdir()) == ["real.gpkg", "t.geojson"]


def test_next_write_removes_only_dead_writers_temps(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    host = export._HOST
    stale = [f".targets.{host}-{dead_pid}-0123abcd.tmp.gpkg",
             f".targets.{host}-{dead_pid}-0123abcd.tmp.gpkg-journal",
             f".t.{host}-{dead_pid}-89abcdef.tmp.geojson"]
    live = [f".targets.{host}-{os.getpid()}-fedcba98.tmp.gpkg",  # a concurrent writer's
            f".targets.otherhost-{dead_pid}-0123abcd.tmp.gpkg",  # another machine's
            "notes.tmp.txt"]  # not ours
    for name in stale + live:
        (tmp_path / name).write_bytes(b"x")
    write_geopackage(tmp_path / "targets.gpkg", frames(0, 0, 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*live, "targets.gpkg"])


def test_threads_of_one_process_append_safely(tmp_path: Path) -> None:
    """Threads of one process (e.g. a threaded Dask worker) share SQLite's in-process locks."""
    gpkg = tmp_path / "targets.gpkg"
    errors: list[BaseException] = []

    def work(w: int) -> None:
        try:
            for s in range(5):
                write_geopackage(gpkg, frames(w, s, BATCH))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(_rows(gpkg, "photo")) == [(w, s) for w in range(4) for s in range(5)]
    assert len(_rows(gpkg, "targets")) == 4 * 5 * BATCH
    assert _integrity(gpkg) == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["targets.gpkg"]
