"""Run the geomogeo command line from QGIS's Python, with feedback and cancellation.

QGIS runs its own Python interpreter, which has neither PyTorch nor geomogeo. The plugin
therefore runs the ``geomogeo`` command of a separate virtual environment in a subprocess:
its stdout and stderr lines become feedback messages, progress bars (``NN%|``) become the
feedback's progress, a cancel kills the subprocess (and the processes it started), and a
failure becomes a :class:`QgsProcessingException` with the command's own one-line message.

This module only uses the standard library and ``qgis.core`` and must stay importable on the
oldest Python a supported QGIS ships (3.9 on Windows builds of QGIS 3.22).
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from qgis.core import QgsProcessingException, QgsProcessingFeedback

#: Environment variable naming the geomogeo command (used when the Processing setting is empty).
CLI_ENV = "GEOMOGEO_CLI"

#: Variables that QGIS sets for its own Python, GDAL and PROJ. Inherited by the virtual
#: environment's interpreter they would make it import QGIS's modules or read another PROJ
#: database than its wheels were built for, so they are removed from the subprocess.
_FOREIGN_ENV = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV", "GDAL_DATA",
                "GDAL_DRIVER_PATH", "PROJ_LIB", "PROJ_DATA")

_PROGRESS = re.compile(r"(\d{1,3})%\|")
_POLL_S = 0.1
_TERMINATE_GRACE_S = 3.0


def resolve_command(configured: str | None) -> list[str]:
    """The command line prefix that runs the geomogeo CLI.

    ``configured`` is the provider's Processing setting; when it is empty, the environment
    variable ``GEOMOGEO_CLI`` is used, then a ``geomogeo`` found on ``PATH``. The value may
    be the ``geomogeo`` script of a virtual environment (``/path/.venv/bin/geomogeo``), a
    Python interpreter with geomogeo installed (run as ``python -m geomogeo.cli``), or the
    virtual environment's folder itself.

    Raises:
        QgsProcessingException: nothing is configured, or the configured path is not an
            executable file.
    """
    value = (configured or "").strip() or os.environ.get(CLI_ENV, "").strip()
    if not value:
        value = shutil.which("geomogeo") or ""
    if not value:
        raise QgsProcessingException(
            "The geomogeo command is not configured: set 'geomogeo command' in Processing > "
            "Options > Providers > geomogeo (e.g. /path/to/geomogeo/.venv/bin/geomogeo), or "
            f"the environment variable {CLI_ENV}.")
    path = Path(value).expanduser()
    if path.is_dir():
        for candidate in (path / "bin" / "geomogeo", path / "Scripts" / "geomogeo.exe"):
            if candidate.is_file():
                path = candidate
                break
    if not path.is_file() or not os.access(path, os.X_OK):
        raise QgsProcessingException(
            f"The geomogeo command {value!r} is not an executable file: point the provider "
            "setting 'geomogeo command' (or GEOMOGEO_CLI) at the geomogeo script of the "
            "virtual environment where geomogeo is installed.")
    if re.fullmatch(r"python[0-9.]*(\.exe)?", path.name, re.IGNORECASE):
        return [str(path), "-m", "geomogeo.cli"]
    return [str(path)]


def subprocess_environment() -> dict[str, str]:
    """QGIS's environment without its Python/GDAL/PROJ settings, with unbuffered UTF-8 I/O."""
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def failure_message(stderr_lines: list[str]) -> str:
    """The command's own one-line explanation: its ``error:`` line, else its last line."""
    for line in reversed(stderr_lines):
        text = line.strip()
        if text.lower().startswith("error:"):
            return text[len("error:"):].strip()
    lines = [ln.strip() for ln in stderr_lines if ln.strip()]
    return lines[-1] if lines else "no message"


def _pump(stream, tag: str, out: queue.Queue) -> None:
    for line in stream:  # text mode: '\r' of progress bars also ends a line
        out.put((tag, line.rstrip("\n")))
    out.put((tag, None))


def _stop(proc: subprocess.Popen) -> None:
    """Terminate ``proc`` and the processes it started (its own process group on POSIX)."""
    def send(sig: int) -> None:
        try:
            if os.name == "posix":
                os.killpg(proc.pid, sig)
            elif sig == signal.SIGTERM:
                proc.terminate()
            else:
                proc.kill()
        except (ProcessLookupError, PermissionError):
            pass

    send(signal.SIGTERM)
    try:
        proc.wait(timeout=_TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        send(getattr(signal, "SIGKILL", signal.SIGTERM))
        proc.wait()


class CliRun(NamedTuple):
    """What a finished command left: its exit status and its output lines."""

    returncode: int
    stdout: list[str]
    stderr: list[str]


def cli_failure(args: list[str], run: CliRun) -> QgsProcessingException:
    """The exception for a failed ``geomogeo ARGS`` run, with the command's own message."""
    return QgsProcessingException(
        f"geomogeo {args[0] if args else ''} failed (exit status {run.returncode}): "
        f"{failure_message(run.stderr)}")


def run_cli(
    command: list[str],
    args: list[str],
    feedback: QgsProcessingFeedback | None,
    *,
    on_progress: Callable[[float], None] | None = None,
    check: bool = True,
) -> CliRun:
    """Run ``command + args`` to the end.

    Every stdout and stderr line is pushed to ``feedback`` (progress-bar lines only update
    ``on_progress`` with their percentage, 0-100). ``feedback.isCanceled()`` is polled every
    0.1 s while the command runs; a cancel terminates it.

    Raises:
        QgsProcessingException: the command could not start, was canceled, or (with
            ``check``) exited with a non-zero status (see :func:`cli_failure`).
    """
    cmd = [*command, *args]
    if feedback is not None:
        feedback.pushCommandInfo(" ".join(shlex.quote(c) for c in cmd))
    extra = {}
    if os.name == "posix":
        extra["start_new_session"] = True  # its own process group, killed as a whole
    else:
        extra["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, encoding="utf-8",
                                errors="replace", env=subprocess_environment(), **extra)
    except OSError as e:
        raise QgsProcessingException(f"cannot start {cmd[0]}: {e}") from e
    if feedback is not None:
        feedback.pushInfo(f"geomogeo started (pid {proc.pid})")
    lines: queue.Queue = queue.Queue()
    pumps = [threading.Thread(target=_pump, args=(s, t, lines), daemon=True)
             for s, t in ((proc.stdout, "out"), (proc.stderr, "err"))]
    for t in pumps:
        t.start()
    stdout: list[str] = []
    stderr: list[str] = []
    open_streams = 2
    try:
        while open_streams:
            if feedback is not None and feedback.isCanceled():
                _stop(proc)
                raise QgsProcessingException(
                    f"Canceled: geomogeo (pid {proc.pid}) was stopped before it finished.")
            try:
                tag, line = lines.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if line is None:
                open_streams -= 1
                continue
            match = _PROGRESS.search(line)
            if match:
                if on_progress is not None:
                    on_progress(min(100.0, float(match.group(1))))
                continue
            (stdout if tag == "out" else stderr).append(line)
            if feedback is not None and line.strip():
                feedback.pushInfo(line)
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # an unexpected exception above: never leave it running
            _stop(proc)
        for t in pumps:
            t.join(timeout=1.0)
        proc.stdout.close()
        proc.stderr.close()
    run = CliRun(rc, stdout, stderr)
    if check and rc != 0:
        raise cli_failure(args, run)
    return run

