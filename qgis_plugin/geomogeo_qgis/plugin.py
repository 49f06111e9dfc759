"""The QGIS plugin object: registers the ``geomogeo`` Processing provider."""

from __future__ import annotations

from qgis.core import QgsApplication

from .provider import GeomogeoProvider


class GeomogeoPlugin:
    """Returned by :func:`classFactory`; QGIS calls ``initProcessing``/``initGui``/``unload``.

    Only the Processing provider is installed (no toolbar or menu): the algorithms appear in
    the Processing Toolbox under "geomogeo".
    """

    def __init__(self, iface) -> None:
        self.iface = iface  # None when loaded headless (tests, qgis_process)
        self.provider = None

    def initProcessing(self) -> None:
        if self.provider is None:
            self.provider = GeomogeoProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
