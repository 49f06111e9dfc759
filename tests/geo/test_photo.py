"""photo: EXIF orientation and GPS, click validation, points files."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from geomogeo.errors import ClickError, PhotoError
from geomogeo.geo import photo

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _stored_image() -> Image.Image:
    """6 x 4 (w x h) stored image: red pixel at stored (x=0, y=0), blue at stored (x=5, y=0)."""
    a = np.zeros((4, 6, 3), np.uint8)
    a[0, 0] = RED
    a[0, 5] = BLUE
    return Image.fromarray(a)


# orientation tag -> where the stored (0, 0) red and (5, 0) blue pixels are displayed (x, y)
ORIENTATIONS = {
    1: ((6, 4), (0, 0), (5, 0)),
    3: ((6, 4), (5, 3), (0, 3)),  # rotated 180
    6: ((4, 6), (3, 0), (3, 5)),  # display = stored rotated 90 degrees clockwise
    8: ((4, 6), (0, 5), (0, 0)),  # display = stored rotated 90 degrees counter-clockwise
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(tmp_path, orientation):
    exif = Image.Exif()
    exif[274] = orientation
    p = tmp_path / f"o{orientation}.png"
    _stored_image().save(p, exif=exif)
    ph = photo.load_photo(p)
    (w, h), red, blue = ORIENTATIONS[orientation]
    assert (ph.width, ph.height) == (w, h) and ph.image.shape == (h, w, 3)
    assert ph.image.dtype == np.uint8
    assert tuple(ph.image[red[1], red[0]]) == RED
    assert tuple(ph.image[blue[1], blue[0]]) == BLUE
    assert ph.gps is None


def _gps_exif(lat_ref="S", lon_ref="W", alt_ref=0):
    exif = Image.Exif()
    exif[274] = 1
    gps = exif.get_ifd(0x8825)
    gps[1] = lat_ref
    gps[2] = (IFDRational(33), IFDRational(51), IFDRational(2191, 100))
    gps[3] = lon_ref
    gps[4] = (IFDRational(151), IFDRational(12), IFDRational(3047, 1000))
    gps[5] = bytes([alt_ref])
    gps[6] = IFDRational(4215, 100)
    gps[16] = "T"
    gps[17] = IFDRational(27325, 100)
    return exif


def test_exif_gps_jpeg(tmp_path):
    p = tmp_path / "gps.jpg"
    Image.new("RGB", (32, 24), (10, 20, 30)).save(p, exif=_gps_exif(), quality=95)
    ph = photo.load_photo(p)
    g = ph.gps
    assert g is not None
    assert g.lat == pytest.approx(-(33 + 51 / 60 + 21.91 / 3600), abs=1e-7)
    assert g.lon == pytest.approx(-(151 + 12 / 60 + 3.047 / 3600), abs=1e-7)
    assert g.altitude == pytest.approx(42.15, abs=1e-9)
    assert g.heading == pytest.approx(273.25, abs=1e-9) and g.heading_ref == "T"


def test_exif_gps_north_east_and_below_sea_level(tmp_path):
    p = tmp_path / "gps_ne.jpg"
    Image.new("RGB", (8, 8)).save(p, exif=_gps_exif("N", "E", alt_ref=1))
    g = photo.load_photo(p).gps
    assert g is not None
    assert g.lat == pytest.approx(33 + 51 / 60 + 21.91 / 3600, abs=1e-7)
    assert g.lon == pytest.approx(151 + 12 / 60 + 3.047 / 3600, abs=1e-7)
    assert g.altitude == pytest.approx(-42.15, abs=1e-9)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grayscale_rgba_palette_become_rgb(tmp_path, mode):
    p = tmp_path / f"m_{mode}.png"
    Image.new(mode, (5, 3)).save(p)
    ph = photo.load_photo(p)
    assert ph.image.shape == (3, 5, 3)


def test_tiff_photo(tmp_path):
    p = tmp_path / "photo.tif"
    Image.new("RGB", (7, 5), (1, 2, 3)).save(p)
    ph = photo.load_photo(p)
    assert (ph.width, ph.height) == (7, 5) and tuple(ph.image[4, 6]) == (1, 2, 3)


def test_non_images_are_photo_errors(tmp_path):
    txt = tmp_path / "notes.jpg"
    txt.write_text("not an image")
    with pytest.raises(PhotoError, match=r"notes\.jpg"):
        photo.load_photo(txt)
    with pytest.raises(PhotoError, match=r"missing\.jpg.*not found"):
        photo.load_photo(tmp_path / "missing.jpg")
    cut = tmp_path / "cut.png"
    Image.new("RGB", (64, 64)).save(cut)
    cut.write_bytes(cut.read_bytes()[:60])
    with pytest.raises(PhotoError, match=r"cut\.png"):
        photo.load_photo(cut)


def test_validate_points_accepts_edges_and_returns_float64():
    pts = photo.validate_points([[0, 0], [640, 480], [12.5, 7.25]], 640, 480)
    assert pts.dtype == np.float64 and pts.shape == (3, 2)
    np.testing.assert_array_equal(pts[2], [12.5, 7.25])
    assert photo.validate_points((3, 4), 10, 10).shape == (1, 2)


@pytest.mark.parametrize(
    ("points", "match"),
    [
        ([], "at least one"),
        ([[1, 2, 3]], "shape"),
        ([[np.nan, 2]], "click 0 .* not finite"),
        ([[1, 2], [641, 3]], r"click 1 \(641, 3\) is outside.*\[0, 640\] x \[0, 480\]"),
        ([[1, -0.5]], r"click 0 \(1, -0.5\) is outside"),
        ([[1, 2], [3, 4], [1, 2]], r"click 0 \(1, 2\) is given twice"),
        ("abc", "numbers"),
    ],
)
def test_validate_points_errors_name_point_and_photo(points, match):
    with pytest.raises(ClickError, match=match) as info:
        photo.validate_points(points, 640, 480, path="field.jpg")
    assert "field.jpg" in str(info.value)


def test_parse_point():
    assert photo.parse_point("12.5, 7") == (12.5, 7.0)
    for bad in ["12", "1,2,3", "a,b", "inf,1"]:
        with pytest.raises(ClickError, match=r"x,y|finite"):
            photo.parse_point(bad)


def test_read_points_file_csv_and_json(tmp_path):
    csv_h = tmp_path / "pts.csv"
    csv_h.write_text("x,y\n10,20\n30.5, 40.25\n")
    np.testing.assert_array_equal(photo.read_points_file(csv_h), [[10, 20], [30.5, 40.25]])
    csv_n = tmp_path / "pts_noheader.csv"
    csv_n.write_text("1,2\n\n3,4\n")
    np.testing.assert_array_equal(photo.read_points_file(csv_n), [[1, 2], [3, 4]])
    j1 = tmp_path / "a.json"
    j1.write_text(json.dumps([[1, 2], [3.5, 4]]))
    np.testing.assert_array_equal(photo.read_points_file(j1), [[1, 2], [3.5, 4]])
    j2 = tmp_path / "b.json"
    j2.write_text(json.dumps([{"x": 5, "y": 6}]))
    np.testing.assert_array_equal(photo.read_points_file(j2), [[5, 6]])
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\nfoo,3\n")
    with pytest.raises(ClickError, match=r"bad\.csv:3"):
        photo.read_points_file(bad)
    badj = tmp_path / "bad.json"
    badj.write_text('[{"x": 1}]')
    with pytest.raises(ClickError, match=r"bad\.json"):
        photo.read_points_file(badj)
    empty = tmp_path / "empty.csv"
    empty.write_text("x,y\n")
    with pytest.raises(ClickError, match="no click points"):
        photo.read_points_file(empty)


# 16-bit photos: scaled by the 16-bit range (v >> 8), as Pillow reduces 16-bit RGB itself


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grayscale_is_scaled_by_its_range_not_saturated(tmp_path, suffix):
    values = np.array([[0, 255, 256, 4095, 32768, 65535]], dtype=np.uint16)
    p = tmp_path / f"gray16{suffix}"
    Image.fromarray(values).save(p)
    assert Image.open(p).mode == "I;16"  # what Pillow reads back: a true 16-bit photo
    ph = photo.load_photo(p)
    expected = np.array([0, 0, 1, 15, 128, 255], dtype=np.uint8)  # v // 256, by hand
    for channel in range(3):
        np.testing.assert_array_equal(ph.image[0, :, channel], expected)


def test_32bit_integer_photo_out_of_16bit_range_is_refused(tmp_path):
    p = tmp_path / "i32.tif"
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32), "I").save(p)
    with pytest.raises(PhotoError, match=r"i32\.tif.*0\.\.70000"):
        photo.load_photo(p)


# Magnetic EXIF headings are turned true with the World Magnetic Model


def _heading_exif(lat, lat_ref, lon, lon_ref, heading, ref, date):
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = lat_ref, (IFDRational(lat), IFDRational(0), IFDRational(0))
    gps[3], gps[4] = lon_ref, (IFDRational(lon), IFDRational(0), IFDRational(0))
    gps[16], gps[17] = ref, IFDRational(int(heading * 100), 100)
    if date is not None:
        gps[29] = date  # GPSDateStamp, UTC
    return exif


# Reference figures: NOAA/BGS WMM2025 test values (WMM2025 technical report, the test-value
# table shipped with the coefficients, declination at height 0 km): 80 N 0 E at 2027.5:
# D = +2.59 deg; 80 S 240 E (120 W) at 2025.0: D = +68.78 deg. 2027-07-02 is decimal year
# 2027.4986, 0.0014 year off 2027.5 (the secular change there is ~0.5 deg/year: < 0.001 deg).
@pytest.mark.parametrize(("lat", "lat_ref", "lon", "lon_ref", "date", "declination"), [
    (80, "N", 0, "E", "2027:07:02", 2.59),
    (80, "S", 120, "W", "2025:01:01", 68.78),
])
def test_magnetic_heading_gets_the_wmm_declination(tmp_path, lat, lat_ref, lon, lon_ref,
                                                   date, declination):
    p = tmp_path / "mag.jpg"
    Image.new("RGB", (8, 8)).save(p, exif=_heading_exif(lat, lat_ref, lon, lon_ref, 300.5, "M",
                                                        date))
    g = photo.load_photo(p).gps
    assert g is not None and g.heading_ref == "T"
    assert g.declination == pytest.approx(declination, abs=0.006)  # NOAA states 2 decimals
    assert g.heading == pytest.approx((300.5 + declination) % 360, abs=0.006)


def test_magnetic_heading_outside_the_model_years_stays_magnetic_with_a_warning(
        tmp_path, caplog):
    p = tmp_path / "old.jpg"
    Image.new("RGB", (8, 8)).save(p, exif=_heading_exif(52, "N", 4, "E", 45.0, "M",
                                                        "2004:06:01"))
    with caplog.at_level("WARNING", logger="geomogeo.geo.photo"):
        g = photo.load_photo(p).gps
    assert g is not None and g.heading == pytest.approx(45.0) and g.heading_ref == "M"
    assert g.declination is None
    assert "old.jpg" in caplog.text and "magnetic" in caplog.text


def test_true_heading_is_left_alone(tmp_path):
    p = tmp_path / "true.jpg"
    Image.new("RGB", (8, 8)).save(p, exif=_heading_exif(80, "N", 0, "E", 300.5, "T",
                                                        "2027:07:02"))
    g = photo.load_photo(p).gps
    assert g is not None and g.heading == pytest.approx(300.5) and g.heading_ref == "T"
    assert g.declination is None


def test_magnetic_heading_without_date_uses_today(tmp_path, monkeypatch):
    seen = []

    def fake(lon, lat, when, altitude_m=0.0):
        seen.append(when)
        return 1.5

    monkeypatch.setattr(photo, "magnetic_declination", fake)
    p = tmp_path / "nodate.jpg"
    Image.new("RGB", (8, 8)).save(p, exif=_heading_exif(52, "N", 4, "E", 359.0, "M", None))
    g = photo.load_photo(p).gps
    assert seen == [dt.datetime.now(dt.timezone.utc).date()]
    assert g is not None and g.heading == pytest.approx(0.5)  # 359 + 1.5 wraps through north
def test_read_location_without_decoding_the_pixels(tmp_path):
    p = tmp_path / "gps.jpg"
    Image.new("RGB", (32, 24), (10, 20, 30)).save(p, exif=_gps_exif(), quality=95)
    g = photo.read_location(p)
    assert g is not None
    assert g.lat == pytest.approx(-(33 + 51 / 60 + 21.91 / 3600), abs=1e-7)
    assert g.lon == pytest.approx(-(151 + 12 / 60 + 3.047 / 3600), abs=1e-7)
    assert g.heading == pytest.approx(273.25, abs=1e-9) and g.heading_ref == "T"
    # a truncated JPEG: its header (with EXIF) is there, most of its pixels are not
    big = tmp_path / "big.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big, exif=_gps_exif(), quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(big.read_bytes()[: big.stat().st_size // 4])
    with pytest.raises(PhotoError):
        photo.load_photo(cut)
    assert photo.read_location(cut) == g
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    assert photo.read_location(plain) is None
    with pytest.raises(PhotoError, match=r"missing\.jpg: photo file not found"):
        photo.read_location(tmp_path / "missing.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(PhotoError, match=r"text\.jpg: cannot read as an image"):
        photo.read_location(tmp_path / "text.jpg")


def test_focal_length_from_a_field_of_view_by_hand() -> None:
    # 90 degrees across 640 px: tan 45 = 1, so half the width
    assert photo.focal_px_from_fov(640, 90.0) == pytest.approx(320.0, rel=1e-12)
    # 60 degrees: 320 / tan 30 = 320 * sqrt(3)
    assert photo.focal_px_from_fov(640, 60.0) == pytest.approx(320.0 * math.sqrt(3.0), rel=1e-12)
    # across the diagonal of a 3:4 photo (500 px): 84 degrees
    assert photo.focal_px_from_fov(500.0, 84.0) == pytest.approx(
        250.0 / math.tan(math.radians(42.0)), rel=1e-12)
