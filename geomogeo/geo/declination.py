"""Magnetic declination from the World Magnetic Model (WMM), to turn compass headings true.

Declination ``D`` is the angle from true (geographic) north to magnetic north at a place and
date, degrees, east positive. A heading read on a compass (EXIF ``GPSImgDirectionRef = "M"``)
becomes a true heading as ``true = (magnetic + D) mod 360``.

The field comes from ``pygeomag`` (a port of NOAA's WMM code and coefficient files). Each WMM
edition is valid for five years; the files shipped with pygeomag cover 2010.0 to 2030.0
(WMM-2010 to WMM-2025). Outside that span, and near the geomagnetic poles where the model is
unreliable (horizontal intensity below 2000 nT, the WMM "blackout zone"), no declination is
given and the caller must decide what to do.
"""

from __future__ import annotations

import datetime as dt
import logging

__all__ = ["magnetic_declination"]

log = logging.getLogger(__name__)

#: WMM's altitude range, kilometres above the WGS84 ellipsoid (or mean sea level).
_ALT_KM = (-1.0, 850.0)


def magnetic_declination(
    lon: float, lat: float, date: dt.date, altitude_m: float = 0.0
) -> float | None:
    """Declination (degrees, east positive) at WGS84 ``lon``/``lat`` (degrees) on ``date``.

    ``altitude_m`` is metres above sea level (clipped to WMM's -1 to 850 km). Returns None,
    with a logged reason, when ``date`` lies outside the WMM editions available (2010.0 to
    2030.0) or the place is in the WMM blackout zone around a geomagnetic pole.
    """
    from pygeomag import GeoMag, decimal_year_from_date

    try:
        model = GeoMag(base_year=date.year)
        alt_km = min(max(altitude_m / 1000.0, _ALT_KM[0]), _ALT_KM[1])
        result = model.calculate(glat=lat, glon=lon, alt=alt_km,
                                 time=decimal_year_from_date(date))
    except ValueError as e:  # no coefficients for that year, or outside a model's five years
        log.info("WMM: no declination for %s (%s)", date.isoformat(), e)
        return None
    if result.in_blackout_zone:
        log.info("WMM: (%.5f, %.5f) lies in the blackout zone near a geomagnetic pole "
                 "(horizontal field %.0f nT < 2000 nT)", lon, lat, result.h)
        return None
    return float(result.d)
