"""The ``geomogeo`` Processing provider and its setting: the geomogeo command to run."""

from __future__ import annotations

from processing.core.ProcessingConfig import ProcessingConfig, Setting
from qgis.core import QgsProcessingProvider

from .algorithms import BatchLocalizeAlgorithm, LocalizeAlgorithm

#: Processing setting (Options > Processing > Providers > geomogeo) with the geomogeo command.
CLI_SETTING = "GEOMOGEO_CLI"


def configured_command() -> str:
    """The setting's current value ('' when unset: the runner then tries GEOMOGEO_CLI, PATH)."""
    return ProcessingConfig.getSetting(CLI_SETTING) or ""


class GeomogeoProvider(QgsProcessingProvider):
    """Processing provider ``geomogeo``: localize clicked objects of photos on orthophotos."""

    def id(self) -> str:
        return "geomogeo"

    def name(self) -> str:
        return "geomogeo"

    def longName(self) -> str:
        return "geomogeo: cross-view localization of clicked objects"

    def load(self) -> bool:
        ProcessingConfig.addSetting(Setting(
            self.name(), CLI_SETTING,
            "geomogeo command (the 'geomogeo' script of its virtual environment, e.g. "
            ".venv/bin/geomogeo; empty: $GEOMOGEO_CLI, then PATH)",
            "", valuetype=Setting.FILE))
        ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        ProcessingConfig.removeSetting(CLI_SETTING)

    def loadAlgorithms(self) -> None:
        self.addAlgorithm(LocalizeAlgorithm(configured_command))
        self.addAlgorithm(BatchLocalizeAlgorithm(configured_command))
