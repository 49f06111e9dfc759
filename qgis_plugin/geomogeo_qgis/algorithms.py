"""The provider's Processing algorithms: ``geomogeo:localize`` and ``geomogeo:batch``.

Both run the geomogeo command line of the configured virtual environment (see
:mod:`.runner`); QGIS's own Python needs neither PyTorch nor geomogeo.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterPoint,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProviderRegistry,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication

from .runner import cli_failure, resolve_command, run_cli

#: Test-time augmentation choices: (label, value passed to ``--tta``; None = the CLI default).
TTA_MODES = (
    ("geomogeo's default (rot4+s2: 16 passes)", None),
    ("none (one network pass, fastest)", "none"),
    ("rot4 (4 quarter turns)", "rot4"),
    ("rot4+s2 (16 passes)", "rot4+s2"),
    ("d4 (8 turned and mirrored views)", "d4"),
    ("rot4+s4 (64 passes)", "rot4+s4"),
)

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_CLICK = re.compile(rf"\s*({_NUMBER})\s*,\s*({_NUMBER})\s*")
#: The last line ``geomogeo batch`` prints (exit status 3 when some photos failed).
_BATCH_SUMMARY = re.compile(
    r"(?P<PHOTOS>\d+) photo\(s\): (?P<LOCALIZED>\d+) localized, (?P<FAILED>\d+) failed, "
    r"(?P<SKIPPED>\d+) already done; (?P<TARGETS>\d+) target\(s\) written")


def parse_clicks(text: str) -> list[tuple[float, float]]:
    """``"x,y;x,y"`` -> [(x, y), ...]: continuous photo pixels (origin at the top-left corner
    of the top-left pixel, x to the right, y down), as the geomogeo CLI takes them.

    Raises:
        QgsProcessingException: a click is not two numbers ``x,y``.
    """
    clicks = []
    for part in (p for p in text.replace("\n", ";").split(";") if p.strip()):
        m = _CLICK.fullmatch(part)
        if m is None:
            raise QgsProcessingException(
                f"Clicks: {part.strip()!r} is not a click 'x,y' (photo pixels); write the "
                "clicks as 'x,y;x,y', e.g. '412,300;820,515'.")
        clicks.append((float(m.group(1)), float(m.group(2))))
    return clicks


def _given(parameters, name: str) -> bool:
    """Whether an optional parameter was set (the dialog passes None or '' when empty)."""
    return parameters.get(name) not in (None, "")


def raster_path(layer) -> str:
    """The file behind a GDAL raster layer (a layer of another provider is refused)."""
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"Raster layer {layer.name()!r} is served by {layer.providerType()!r}; geomogeo "
            "needs a raster file (GeoTIFF, VRT) read by GDAL.")
    path = QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path", "")
    if not path or not Path(path).exists():
        raise QgsProcessingException(
            f"Raster layer {layer.name()!r} is not a local file ({layer.source()!r}).")
    return path


class _GeomogeoAlgorithm(QgsProcessingAlgorithm):
    """What both algorithms share: the group, translation and the configured command."""

    def __init__(self, cli_setting) -> None:
        super().__init__()
        self._cli_setting = cli_setting  # () -> the provider setting's current value

    def createInstance(self):
        return type(self)(self._cli_setting)

    def group(self) -> str:
        return self.tr("Cross-view localization")

    def groupId(self) -> str:
        return "localization"

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("geomogeo", text)

    def command(self) -> list[str]:
        return resolve_command(self._cli_setting())

    def add_model_parameters(self) -> None:
        """The checkpoint (MODEL) and test-time augmentation (TTA) parameters."""
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", self.tr("Model checkpoint (default: the shipped model)"), optional=True,
            fileFilter="geomogeo checkpoint (*.pt *.onnx)"))
        self.addParameter(QgsProcessingParameterEnum(
            "TTA", self.tr("Test-time augmentation"), options=[m[0] for m in TTA_MODES],
            defaultValue=0))

    def model_args(self, parameters, context) -> list[str]:
        """``--model`` and ``--tta`` options for the CLI (none when left at the defaults)."""
        args = []
        model = self.parameterAsFile(parameters, "MODEL", context)
        if model:
            args += ["--model", model]
        mode = TTA_MODES[self.parameterAsEnum(parameters, "TTA", context)][1]
        return args if mode is None else [*args, "--tta", mode]


class LocalizeAlgorithm(_GeomogeoAlgorithm):
    """``geomogeo:localize``: one photo's clicked objects as polygons on a raster layer."""

    def name(self) -> str:
        return "localize"

    def displayName(self) -> str:
        return self.tr("Localize clicked objects in a photo")

    def shortHelpString(self) -> str:
        return self.tr(
            "Finds each clicked object of a field or drone photo on a georeferenced "
            "orthophoto and returns its polygon in the raster's CRS, with the score, the click, "
            "the box in reference pixels and the model as attributes.\n\n"
            "Clicks are photo pixels (x to the right, y down, from the top-left corner of the "
            "image), as 'x,y;x,y' or a CSV file with x,y columns. The photo position centres "
            "the search window (default: the photo's EXIF GPS; without it the raster, or the "
            "search extent, is searched). The heading is degrees clockwise from north "
            "(default: EXIF GPSImgDirection).\n\n"
            "Runs the geomogeo command set in Processing > Options > Providers > geomogeo.")

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterFile(
            "PHOTO", self.tr("Photo"), fileFilter="Images (*.jpg *.jpeg *.png *.tif *.tiff)"))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "RASTER", self.tr("Reference orthophoto (georeferenced raster)")))
        self.addParameter(QgsProcessingParameterString(
            "CLICKS", self.tr("Clicks in photo pixels: x,y;x,y"), optional=True))
        self.addParameter(QgsProcessingParameterFile(
            "CLICKS_FILE", self.tr("...or a clicks file (CSV x,y or JSON)"), optional=True,
            fileFilter="Clicks (*.csv *.json)"))
        self.addParameter(QgsProcessingParameterPoint(
            "CENTER", self.tr("Photo position (default: EXIF GPS)"), optional=True))
        self.addParameter(QgsProcessingParameterExtent(
            "EXTENT", self.tr("Search extent when the position is unknown"), optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "HEADING", self.tr("Camera heading, degrees clockwise from north (default: EXIF)"),
            type=QgsProcessingParameterNumber.Double, optional=True, minValue=-360.0,
            maxValue=360.0))
        self.add_model_parameters()
        self.addParameter(QgsProcessingParameterFeatureSink(
            "OUTPUT", self.tr("Localized objects"), QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber("TARGETS", self.tr("Number of targets")))

    def processAlgorithm(self, parameters, context, feedback):
        command = self.command()
        layer = self.parameterAsRasterLayer(parameters, "RASTER", context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, "RASTER"))
        raster = raster_path(layer)
        args = ["localize", self.parameterAsFile(parameters, "PHOTO", context), raster]
        clicks = parse_clicks(self.parameterAsString(parameters, "CLICKS", context) or "")
        args += [f"--point={x!r},{y!r}" for x, y in clicks]
        clicks_file = self.parameterAsFile(parameters, "CLICKS_FILE", context)
        if clicks_file:
            args += ["--points-file", clicks_file]
        elif not clicks:
            raise QgsProcessingException(
                self.tr("No clicks: give 'Clicks' as x,y;x,y or a clicks file."))
        crs = layer.crs()
        crs_text = crs.authid() or crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)
        if _given(parameters, "CENTER"):
            point = self.parameterAsPoint(parameters, "CENTER", context, crs)
            args += [f"--center={point.x()!r},{point.y()!r}", "--center-crs", crs_text]
        if _given(parameters, "EXTENT"):
            ext = self.parameterAsExtent(parameters, "EXTENT", context, crs)
            args += [f"--extent={ext.xMinimum()!r},{ext.yMinimum()!r},"
                     f"{ext.xMaximum()!r},{ext.yMaximum()!r}"]
        if _given(parameters, "HEADING"):
            args += [f"--heading={self.parameterAsDouble(parameters, 'HEADING', context)!r}"]
        args += self.model_args(parameters, context)

        out_dir = tempfile.mkdtemp(prefix="geomogeo_qgis_")
        try:
            run_cli(command, [*args, "-o", out_dir, "--no-map", "--no-heatmaps"], feedback,
                    on_progress=lambda p: feedback.setProgress(0.9 * p))
            feedback.setProgress(90)
            sink_id, count = self.copy_targets(Path(out_dir) / "targets.gpkg", parameters,
                                               context, feedback)
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        feedback.setProgress(100)
        return {"OUTPUT": sink_id, "TARGETS": count}

    def copy_targets(self, gpkg: Path, parameters, context, feedback) -> tuple[str, int]:
        """Copy the ``targets`` layer of the CLI's GeoPackage into the OUTPUT sink (same
        CRS, geometries and typed attributes; the GeoPackage's ``fid`` key is not copied)."""
        src = QgsVectorLayer(f"{gpkg}|layername=targets", "targets", "ogr")
        try:
            if not src.isValid():
                raise QgsProcessingException(f"geomogeo wrote no readable targets layer: {gpkg}")
            fields = src.fields()
            fid = fields.indexOf("fid")
            if fid >= 0:
                fields.remove(fid)
            sink, sink_id = self.parameterAsSink(parameters, "OUTPUT", context, fields,
                                                 src.wkbType(), src.crs())
            if sink is None:
                raise QgsProcessingException(self.invalidSinkError(parameters, "OUTPUT"))
            count = 0
            for feature in src.getFeatures():
                out = QgsFeature(fields)
                out.setGeometry(feature.geometry())
                out.setAttributes([feature[f.name()] for f in fields])
                if not sink.addFeature(out, QgsFeatureSink.FastInsert):
                    raise QgsProcessingException(
                        f"cannot write target {count} to the output: {sink.lastError()}")
                count += 1
            feedback.pushInfo(f"{count} target(s) localized")
            return sink_id, count
        finally:
            del src  # release the GeoPackage before its folder is removed


class BatchLocalizeAlgorithm(_GeomogeoAlgorithm):
    """``geomogeo:batch``: a clicks table of many photos into one GeoPackage."""

    def name(self) -> str:
        return "batch"

    def displayName(self) -> str:
        return self.tr("Batch localize")

    def shortHelpString(self) -> str:
        return self.tr(
            "Localizes the clicked objects of many photos (a clicks table: CSV or JSON Lines "
            "with photo, x, y and optional target_id, heading, lon, lat and extra columns; "
            "photo paths relative to the table; or a folder of photos, each with a "
            "PHOTO.clicks.csv of x, y) on a raster layer or a folder of tiles, into one "
            "GeoPackage (targets, photo footprints and an errors table). A rerun skips the "
            "photos already done.\n\n"
            "Runs 'geomogeo batch' of the geomogeo command set in Processing > Options > "
            "Providers > geomogeo.")

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterFile(
            "CLICKS_TABLE", self.tr("Clicks table (CSV or JSON Lines)"), optional=True,
            fileFilter="Clicks table (*.csv *.jsonl *.ndjson)"))
        self.addParameter(QgsProcessingParameterFile(
            "PHOTO_FOLDER", self.tr("...or a folder of photos with PHOTO.clicks.csv sidecars"),
            behavior=QgsProcessingParameterFile.Folder, optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "RASTER", self.tr("Reference orthophoto"), optional=True))
        self.addParameter(QgsProcessingParameterFile(
            "TILES", self.tr("...or a folder of reference tiles"),
            behavior=QgsProcessingParameterFile.Folder, optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "WORKERS", self.tr("Worker processes (0: none, in one process; default: one per "
                               "CPU core)"),
            type=QgsProcessingParameterNumber.Integer, optional=True, minValue=0))
        self.add_model_parameters()
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", self.tr("Output GeoPackage"), fileFilter="GeoPackage (*.gpkg)"))
        for name, text in (("PHOTOS", "Photos in the table"),
                           ("LOCALIZED", "Photos localized by this run"),
                           ("FAILED", "Photos that failed (layer 'errors')"),
                           ("SKIPPED", "Photos already in the GeoPackage"),
                           ("TARGETS", "Targets written by this run")):
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(text)))

    def processAlgorithm(self, parameters, context, feedback):
        command = self.command()
        table = self.parameterAsFile(parameters, "CLICKS_TABLE", context)
        folder = self.parameterAsFile(parameters, "PHOTO_FOLDER", context)
        if bool(table) == bool(folder):
            raise QgsProcessingException(
                self.tr("Give either a clicks table or a folder of photos with sidecars."))
        tiles = self.parameterAsFile(parameters, "TILES", context)
        layer = self.parameterAsRasterLayer(parameters, "RASTER", context)
        if (layer is None) == (not tiles):
            raise QgsProcessingException(
                self.tr("Give either a reference raster layer or a folder of tiles."))
        reference = tiles or raster_path(layer)
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        args = ["batch", table or folder, reference, "-o", out,
                *self.model_args(parameters, context)]
        if _given(parameters, "WORKERS"):
            args += ["--workers", str(self.parameterAsInt(parameters, "WORKERS", context))]
        run = run_cli(command, args, feedback, on_progress=feedback.setProgress, check=False)
        summary = next((m for m in map(_BATCH_SUMMARY.search, run.stdout) if m), None)
        if summary is None and run.returncode != 0:
            raise cli_failure(args, run)
        if summary is None:  # finished, but its summary line is not the one expected here
            feedback.pushWarning("geomogeo batch printed no summary line: no counts")
        counts = {} if summary is None else {k: int(v) for k, v in summary.groupdict().items()}
        if counts.get("FAILED"):
            # the batch went on: the other photos' results are in the GeoPackage
            feedback.pushWarning(f"{counts['FAILED']} photo(s) failed; see the layer 'errors' "
                                 f"of {out}")
        feedback.setProgress(100)
        return {"OUTPUT": out, **counts}
