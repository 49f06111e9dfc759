"""geomogeo for QGIS: a Processing provider that runs geomogeo's command line.

Install: zip this folder (``python scripts/package_qgis_plugin.py``), then in QGIS
Plugins > Manage and Install Plugins > Install from ZIP; set the geomogeo command in
Processing > Options > Providers > geomogeo.
"""


def classFactory(iface):
    """QGIS's plugin entry point: the plugin object for ``iface`` (None when headless)."""
    from .plugin import GeomogeoPlugin

    return GeomogeoPlugin(iface)
