"""The cross-view data engine: drone photos rendered from real georeferenced orthophotos.

``scene`` (metric scenes from GeoTIFFs, object finding), ``camera`` (pinhole drone camera,
exact ground homography, lens distortion), ``render`` (photos, reference windows, the
photometric gap), ``procedural`` (random towns), ``engine`` (samples, data sets, manifests).
"""
