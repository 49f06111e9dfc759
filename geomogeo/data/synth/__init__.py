"""The cross-view data engine: drone photos rendered from real georeferenced orthophotos.

``scene`` (metric scenes from GeoTIFFs, object finding), ``camera`` (pinhole drone camera,
exact ground homography, 3-D projection, lens distortion), ``structures`` (targets as prisms
and slabs over convex footprints, or real tiles' known ones), ``render`` (photos with
building prisms and bridge decks, reference windows, the photometric gap), ``procedural``
(random towns, some with bridges), ``footprints`` (real tiles' known building footprints),
``engine`` (samples, data sets, manifests).
"""
