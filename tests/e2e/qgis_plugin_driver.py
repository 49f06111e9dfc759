"""Drive the geomogeo QGIS plugin inside QGIS 3.22, headless; run by ``test_qgis_plugin.py``.

Runs under Debian's ``/usr/bin/python3`` (QGIS's Python: no torch, no geomogeo) with
``QT_QPA_PLATFORM=offscreen``: ``python3 qgis_plugin_driver.py CONFIG.json RESULT.json``.

CONFIG: ``plugin_zip`` (the packaged plugin), ``plugins_dir`` (an empty folder to install it
into), ``cli`` (the geomogeo command for the provider setting), ``resolve`` (setting values
to resolve into commands, without running them) and ``runs``, each
``{"alg": id, "params": {...}, "cli": optional other setting, "cancel_at_group_size": n}``
(cancel once the CLI's process group has n live processes; 1: as soon as it started).
The plugin is installed the way QGIS does it (unzipped into a plugin path, found by
``qgis.utils.updateAvailablePlugins``, imported by ``loadPlugin``, started by
``startProcessingPlugin``, i.e. ``classFactory(None).initProcessing()``), each run goes
through ``processing.run``, and RESULT records what QGIS saw: registry contents, per run the
exception (if any), feedback messages, warnings, commands and progress, the other results,
and the OUTPUT layer's CRS, fields and features (attributes and polygon rings), or OUTPUT as
returned when it is not a layer.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import zipfile
from pathlib import Path

from qgis.core import (
    NULL,
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsVectorLayer,
    QgsWkbTypes,
)


def process_group(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry))
    return members


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps every message, warning, command and progress value; optionally cancels as soon
    as the CLI has started (``cancel_at_group_size`` 1) or once its process group (the CLI
    and the processes it started, e.g. Dask workers) has that many live processes."""

    def __init__(self, cancel_at_group_size: int | None) -> None:
        super().__init__()
        self.messages: list[str] = []
        self.commands: list[str] = []
        self.warnings: list[str] = []
        self.progress_values: list[float] = []
        self.pid: int | None = None
        self.group_size_at_cancel: int | None = None
        self.cancel_at = cancel_at_group_size
        self.progressChanged.connect(self.progress_values.append)

    def _watch(self) -> None:
        end = time.monotonic() + 300
        while time.monotonic() < end and not self.isCanceled():
            size = len(process_group(self.pid))
            if size >= self.cancel_at:
                self.group_size_at_cancel = size
                self.cancel()
            time.sleep(0.05)

    def pushInfo(self, info: str) -> None:  # noqa: N802 (QGIS API)
        self.messages.append(info)
        if info.startswith("geomogeo started (pid "):
            self.pid = int(info.split("pid ")[1].rstrip(")"))
            if self.cancel_at is not None:
                threading.Thread(target=self._watch, daemon=True).start()
        super().pushInfo(info)

    def pushWarning(self, warning: str) -> None:  # noqa: N802 (QGIS API)
        self.warnings.append(warning)
        super().pushWarning(warning)

    def pushCommandInfo(self, info: str) -> None:  # noqa: N802 (QGIS API)
        self.commands.append(info)
        super().pushCommandInfo(info)


def _value(v):
    return None if v == NULL or v is None else v


def _layer_record(layer: QgsVectorLayer) -> dict:
    fields = layer.fields()
    features = []
    for f in layer.getFeatures():
        geom = f.geometry()
        rings = [[[p.x(), p.y()] for p in ring] for ring in geom.asPolygon()]
        features.append({"attrs": {fld.name(): _value(f[fld.name()]) for fld in fields},
                         "rings": rings, "valid": geom.isGeosValid()})
    return {
        "crs": layer.crs().authid(),
        "geometry": QgsWkbTypes.displayString(layer.wkbType()),
        "fields": {fld.name(): fld.type() for fld in fields},
        "features": features,
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _group_left(pgid: int, wait_s: float = 10.0) -> list[int]:
    """The group's processes still alive after up to ``wait_s`` (they get SIGTERM first)."""
    end = time.monotonic() + wait_s
    while process_group(pgid) and time.monotonic() < end:
        time.sleep(0.1)
    return process_group(pgid)


def main(config_path: str, result_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text())
    result: dict = {"runs": []}
    qgs = QgsApplication([], False)
    qgs.initQgis()
    try:
        sys.path.append(str(Path(QgsApplication.pkgDataPath()) / "python" / "plugins"))
        import processing
        import qgis.utils
        from processing.core.Processing import Processing
        from processing.core.ProcessingConfig import ProcessingConfig

        Processing.initialize()
        registry = QgsApplication.processingRegistry()

        # install from the zip as QGIS's plugin manager does: unzip into a plugin path
        with zipfile.ZipFile(cfg["plugin_zip"]) as zf:
            zf.extractall(cfg["plugins_dir"])
        sys.path.insert(0, cfg["plugins_dir"])
        qgis.utils.plugin_paths = [cfg["plugins_dir"]]
        qgis.utils.updateAvailablePlugins()
        result["available_plugins"] = list(qgis.utils.available_plugins)
        result["metadata_name"] = qgis.utils.pluginMetadata("geomogeo_qgis", "name")
        result["has_processing_provider"] = qgis.utils.pluginMetadata(
            "geomogeo_qgis", "hasProcessingProvider")
        result["loaded"] = qgis.utils.loadPlugin("geomogeo_qgis")
        result["started"] = qgis.utils.startProcessingPlugin("geomogeo_qgis")
        provider = registry.providerById("geomogeo")
        result["provider"] = None if provider is None else provider.longName()
        result["algorithms"] = sorted(a.id() for a in registry.algorithms()
                                      if a.provider() is not None
                                      and a.provider().id() == "geomogeo")
        from geomogeo_qgis.provider import CLI_SETTING

        result["setting_registered"] = CLI_SETTING in ProcessingConfig.settings
        from geomogeo_qgis.runner import resolve_command

        result["resolved"] = []
        for value in cfg.get("resolve", []):
            try:
                result["resolved"].append(resolve_command(value))
            except QgsProcessingException as e:
                result["resolved"].append(f"error: {e}")

        for run in cfg["runs"]:
            ProcessingConfig.setSettingValue(CLI_SETTING, run.get("cli", cfg["cli"]))
            feedback = RecordingFeedback(run.get("cancel_at_group_size"))
            context = QgsProcessingContext()
            record: dict = {"error": None, "output": None}
            try:
                out = processing.run(run["alg"], run["params"], feedback=feedback,
                                     context=context)
                layer = out.pop("OUTPUT", None)
                if isinstance(layer, QgsVectorLayer):
                    record["output"] = _layer_record(layer)
                    del layer
                else:
                    record["output"] = layer
                record["results"] = out
            except QgsProcessingException as e:
                record["error"] = str(e)
            record["messages"] = feedback.messages
            record["commands"] = feedback.commands
            record["warnings"] = feedback.warnings
            record["progress"] = feedback.progress_values
            record["pid"] = feedback.pid
            record["pid_alive_after"] = None if feedback.pid is None else _pid_alive(feedback.pid)
            record["group_left"] = None if feedback.pid is None else _group_left(feedback.pid)
            record["group_size_at_cancel"] = feedback.group_size_at_cancel
            result["runs"].append(record)
            del context, feedback

        qgis.utils.unloadPlugin("geomogeo_qgis")
        result["provider_after_unload"] = registry.providerById("geomogeo") is not None
        result["setting_after_unload"] = CLI_SETTING in ProcessingConfig.settings
        del provider, registry
    finally:
        Path(result_path).write_text(json.dumps(result))
        qgs.exitQgis()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
