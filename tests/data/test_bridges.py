"""Bridges in the data engine: elevated slabs (a base above the ground), their rendering (deck
lifted to its plane, side faces between base and top, the ground visible under them, exact
far-to-near order), bridged procedural towns, bridge targets, and the default output
unchanged.

Hand-built scenes use the prism tests' town (a grey 110 ground with polygons of known grey):
the orthophoto shows the deck (grey 230) over a lower road (grey 40), the ground under the
deck is the same scene without the deck.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_prisms import FLAT, X0, Y0, _town, assert_top_displaced

from geomogeo.data.synth.camera import Camera, CameraRanges
from geomogeo.data.synth.engine import SynthConfig, World, build_worlds, generate
from geomogeo.data.synth.procedural import BRIDGE_BASE_M, bridged_town, procedural_town
from geomogeo.data.synth.render import View, render_view
from geomogeo.data.synth.scene import Scene
from geomogeo.data.synth.structures import KINDS, Structures, rectangle

ROOT = Path(__file__).resolve().parents[2]
BRIDGE, PIER = KINDS.index("bridge"), KINDS.index("pier")
#: main before bridges existed: the default output must be byte-identical to its output.
BEFORE_BRIDGES = "a09d0089a6011c1ef396eb72a66cd59708a45942"


def _bridge(deck: np.ndarray, base: float, top: float, road: np.ndarray
            ) -> tuple[Scene, Scene, Structures]:
    """The orthophoto (lower road 40, deck 230 on top), the ground under the deck (the road
    only) and the deck as a ``bridge`` slab from ``base`` to ``top`` metres."""
    scene, _ = _town([(road, 0.0, 40), (deck, top, 230)])
    ground, _ = _town([(road, 0.0, 40)])
    return scene, ground, Structures.from_polygons([deck], [top], "bridge", [base])


def _ray_cast(cam: Camera, view: View, st: Structures) -> np.ndarray:
    """(H, W) index of the first raised structure each pixel's ray meets (-1: none, the
    ground), computed independently of the renderer: the ray from the camera centre through
    the pixel's undistorted position, clipped by each slab's or prism's half-spaces (its
    footprint's edges and base <= z <= top)."""
    h, w = view.labels.shape
    f = cam.focal
    und = view.undistorted
    cam_dirs = np.stack([(und[..., 0] - w / 2) / f, (und[..., 1] - h / 2) / f,
                         np.ones((h, w))], axis=-1)
    d = cam_dirs @ cam.rotation()  # world directions (R is world -> camera)
    o = np.array([cam.x, cam.y, cam.altitude])
    first, who = np.full((h, w), np.inf), np.full((h, w), -1)
    for i in np.nonzero(st.heights > 0)[0]:
        fp = st.footprints[i]
        t0 = (st.bases[i] - o[2]) / d[..., 2]
        t1 = (st.heights[i] - o[2]) / d[..., 2]
        lo, hi = np.minimum(t0, t1), np.maximum(t0, t1)
        e = np.roll(fp, -1, axis=0) - fp
        for a, n in zip(fp, np.column_stack([e[:, 1], -e[:, 0]]), strict=True):
            # Inside the edge: n . (o + t d - a) <= 0.
            den, num = d[..., :2] @ n, -float((o[:2] - a) @ n)
            with np.errstate(divide="ignore", invalid="ignore"):
                t = num / den
            lo = np.where(den < 0, np.maximum(lo, t), lo)
            hi = np.where(den > 0, np.minimum(hi, t), hi)
            hi = np.where((den == 0) & (num < 0), -np.inf, hi)
        hit = (lo <= hi) & (lo < first)
        first[hit], who[hit] = lo[hit], i
    return who


def _assert_ray_cast(cam: Camera, view: View, st: Structures) -> None:
    """Each pixel of the view shows (labels) what its ray meets first; up to 3 pixels may
    differ, whose centres lie on a face's edge within rounding."""
    shown = np.where(view.labels >= 0, view.labels // 2, -1)
    assert (shown != _ray_cast(cam, view, st)).sum() <= 3


# --------------------------------------------------------------------------------------------
# 1. Rendering slabs


def test_deck_displacement_is_height_times_tan_off_nadir() -> None:
    """Nadir camera 80 m up, a deck 9-10 m up, 30 x 12 m, its centre 20 m east and 15 m
    north: the photographed deck, back-projected onto the ground, lies h tan(theta) further
    out, theta the off-nadir angle of the line of sight to the deck (h = the top, 10 m)."""
    base, h, alt, dx, dy = 9.0, 10.0, 80.0, 20.0, 15.0
    cx, cy = X0 + 60.0, Y0 + 60.0
    deck = rectangle(cx + dx, cy + dy, 30.0, 12.0, 0.4)
    road = rectangle(cx + dx, cy + dy, 14.0, 100.0, 0.4 + np.pi / 2)
    scene, ground, st = _bridge(deck, base, h, road)
    cam = Camera(cx, cy, alt, 0.0, 0.0, 70.0, 640, 480)
    view = render_view(scene, cam, st, 0.0, ground)
    u, v = assert_top_displaced(view, cam, (cx + dx, cy + dy), h, alt)
    top = view.labels == 0
    # The deck's pixels, back-projected onto its plane, fall on its footprint, and cover its
    # area (m^2, at the nadir scale of the deck's plane).
    xy = cam.photo_to_plane(np.column_stack([u + 0.5, v + 0.5]), h)
    local = (xy - [cx + dx, cy + dy]) @ np.array([[np.cos(0.4), -np.sin(0.4)],
                                                  [np.sin(0.4), np.cos(0.4)]])
    assert (np.abs(local) <= [15.0 + 1e-6, 6.0 + 1e-6]).all()
    assert abs(top.sum() * (alt - h) ** 2 / cam.focal ** 2 - 360.0) < 6.0


def test_ground_under_the_deck_shows_in_oblique_views() -> None:
    """A 40 x 8 m deck 11-12 m over a lower road running north, seen from the south at
    about 46 degrees off nadir: its image is displaced about 12.5 m north, more than its
    width, so the road under its footprint is in the photo (grey 40, ground label), between
    the footprint and the displaced deck. A prism of the same top (from the ground up) hides
    the same pixels behind its south wall."""
    cx, cy = X0 + 60.0, Y0 + 50.0
    deck = rectangle(cx, cy, 40.0, 8.0, 0.0)
    road = rectangle(cx, cy, 14.0, 100.0, 0.0)
    scene, ground, st = _bridge(deck, 11.0, 12.0, road)
    cam = Camera(cx, cy - 50.0, 60.0, 0.0, 40.0, 70.0, 640, 480)
    view = render_view(scene, cam, st, 0.0, ground)
    # Pixels whose ground point is under the deck, on the road, 1 m clear of its edges.
    h, w = view.labels.shape
    g = cam.photo_to_ground(view.undistorted.reshape(-1, 2)).reshape(h, w, 2)
    under = (np.abs(g[..., 0] - cx) < 6.0) & (np.abs(g[..., 1] - cy) < 3.0)
    assert under.sum() > 1000
    assert (view.labels[under] == -1).all()
    assert (view.image[under] == 40).all()  # the road, not a wall nor the deck
    uv, _ = cam.project(np.array([[cx, cy, 0.0]]))
    col, row = (int(t) for t in uv[0])
    assert view.labels[row, col] == -1 and (view.image[row, col] == 40).all()
    # The deck and its south face are drawn above; the face shaded away from the sun (north):
    # round(230 * 0.35).
    assert (view.labels == 0).sum() > 1000
    face = view.labels == 1
    assert face.sum() > 100
    assert (np.abs(view.image[face].astype(int) - 80) <= 1).all()
    prism = Structures.from_polygons([deck], [12.0], "bridge")
    wall = render_view(scene, cam, prism, 0.0, ground)
    assert wall.labels[row, col] == 1 and (wall.labels[under] >= 0).all()
    # Every pixel shows what a ray cast from the camera meets first.
    _assert_ray_cast(cam, view, st)


def test_draw_order_is_exact_where_centroid_distance_misleads() -> None:
    """A 70 m deck running towards the camera and a 25 m tower beside its far end: the
    deck's centroid is nearer the camera than the tower's, yet the tower hides part of the
    deck (they are separated by the line x = cx, and the camera is on the tower's side). The
    photo shows, at every pixel, what the ray meets first."""
    cx, cy = X0 + 60.0, Y0 + 60.0
    deck = rectangle(cx + 5.0, cy + 5.0, 8.0, 70.0, 0.0)
    tower = rectangle(cx - 7.5, cy + 35.0, 13.0, 10.0, 0.0)
    scene, _ = _town([(deck, 9.0, 230), (tower, 25.0, 60)])
    st = Structures.concat([Structures.from_polygons([deck], [9.0], "bridge", [8.0]),
                            Structures.from_polygons([tower], [25.0], "building")])
    cam = Camera(cx - 40.0, cy - 40.0, 60.0, 30.0, 35.0, 70.0, 640, 480)
    dist = np.hypot(*(st.points - [cam.x, cam.y]).T)
    assert dist[0] < dist[1] - 15.0  # by centroid distance the deck would be drawn last
    view = render_view(scene, cam, st, 0.0)
    truth = _ray_cast(cam, view, st)
    alone = [_ray_cast(cam, view, st.subset(np.arange(2) == k)) for k in range(2)]
    hidden = (alone[0] == 0) & (alone[1] == 0) & (truth == 1)  # deck behind the tower
    assert hidden.sum() > 100
    _assert_ray_cast(cam, view, st)


def test_structures_bases_default_and_validation() -> None:
    sq = rectangle(0.0, 0.0, 10.0, 10.0, 0.0)
    st = Structures.from_polygons([sq, sq], [5.0, 0.0], "building")
    np.testing.assert_array_equal(st.bases, [0.0, 0.0])
    both = Structures.concat([st, Structures.from_polygons([sq], [9.0], "bridge", [8.0])])
    np.testing.assert_array_equal(both.bases, [0.0, 0.0, 8.0])
    np.testing.assert_array_equal(both.subset(np.array([False, True, True])).bases, [0.0, 8.0])
    with pytest.raises(ValueError, match="bases"):
        Structures.from_polygons([sq], [5.0], "bridge", [5.0])  # a slab needs base < top
    with pytest.raises(ValueError, match="bases"):
        Structures.from_polygons([sq], [5.0], "bridge", [-1.0])


# --------------------------------------------------------------------------------------------
# 2. Bridged procedural towns


def _decks(st: Structures) -> list[int]:
    return [int(i) for i in np.nonzero(st.kinds == BRIDGE)[0]]


def test_bridged_town_decks_river_and_ground() -> None:
    scene, ground, st = bridged_town(np.random.default_rng(0), bridge_chance=1.0)
    decks = _decks(st)
    assert len(decks) >= 3
    lo, hi = BRIDGE_BASE_M
    assert ((st.bases[decks] >= lo) & (st.bases[decks] <= hi)).all()
    thick = st.heights[decks] - st.bases[decks]
    assert ((thick >= 0.8) & (thick <= 1.5)).all()
    assert (st.bases[st.kinds != BRIDGE] == 0).all()
    for i in decks:
        e = np.roll(st.footprints[i], -1, axis=0) - st.footprints[i]
        length, width = sorted(np.hypot(*e[:2].T), reverse=True)
        assert 30.0 <= length <= 80.0 and 8.0 <= width <= 20.0
    # The scene (an orthophoto) and the ground under the decks differ only on the decks,
    # within the blur's reach (2 pixels, 1 m); the decks are no plain ground there.
    n = scene.valid.shape[0]
    cc, rr = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    x, y = scene.pixel_to_map(cc, rr)
    near = np.zeros((n, n), bool)
    for i in decks:
        on = [np.ones((n, n), bool), np.ones((n, n), bool)]
        for poly, m in zip((_grown(st.footprints[i], 1.5), _grown(st.footprints[i], -1.5)), on,
                           strict=True):
            for j in range(4):
                a, b = poly[j], poly[(j + 1) % 4]
                m &= (b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0]) >= 0
        near |= on[0]
        diff = np.abs(scene.image[on[1]].astype(int) - ground.image[on[1]]).max(axis=1)
        assert (diff > 8).mean() > 0.5
    np.testing.assert_array_equal(scene.image[~near], ground.image[~near])
    # No building stands on a deck, and no road piece is under one (exact rectangles); two
    # piers stand under each, from the ground up to its base, inside its footprint.
    piers = np.nonzero(st.kinds == PIER)[0]
    assert len(piers) == 2 * len(decks)
    assert (st.bases[piers] == 0).all()
    for i in decks:
        for j in np.nonzero((st.kinds != BRIDGE) & (st.kinds != PIER))[0]:
            assert _separated(st.footprints[i], st.footprints[j])
        under = [j for j in piers if _inside(st.footprints[i], st.footprints[j])]
        assert len(under) == 2 and (st.heights[under] == st.bases[i]).all()
    # Without a crossing the scene is its own ground; procedural_town never has bridges.
    plain, plain_ground, plain_st = bridged_town(np.random.default_rng(1), bridge_chance=0.0)
    assert plain_ground is plain and not (plain_st.kinds == BRIDGE).any()
    _, town_st = procedural_town(np.random.default_rng(1))
    assert (town_st.kinds != BRIDGE).all() and (town_st.bases == 0).all()


def _grown(rect: np.ndarray, margin: float) -> np.ndarray:
    """The rectangle (4, 2), counter-clockwise, with ``margin`` metres added on every side."""
    c = rect.mean(axis=0)
    e0, e1 = rect[1] - rect[0], rect[2] - rect[1]
    a0, a1 = e0 / np.hypot(*e0), e1 / np.hypot(*e1)
    h0, h1 = np.hypot(*e0) / 2 + margin, np.hypot(*e1) / 2 + margin
    return np.array([c - h0 * a0 - h1 * a1, c + h0 * a0 - h1 * a1, c + h0 * a0 + h1 * a1,
                     c - h0 * a0 + h1 * a1])


def _inside(outer: np.ndarray, inner: np.ndarray) -> bool:
    """Every vertex of ``inner`` lies inside the convex counter-clockwise ``outer``."""
    e = np.roll(outer, -1, axis=0) - outer
    d = inner[:, None] - outer[None]
    return bool((e[None, :, 0] * d[..., 1] - e[None, :, 1] * d[..., 0] > 0).all())


def _separated(p: np.ndarray, q: np.ndarray) -> bool:
    """Convex polygons (counter-clockwise) with a separating line along an edge of either."""
    for a, b in ((p, q), (q, p)):
        e = np.roll(a, -1, axis=0) - a
        n = np.column_stack([e[:, 1], -e[:, 0]])
        if (np.einsum("qkd,kd->qk", b[:, None] - a[None], n) > -1e-9).all(axis=0).any():
            return True
    return False


def test_bridge_targets_box_the_deck_and_click_on_it() -> None:
    scene, ground, st = bridged_town(np.random.default_rng(2), bridge_chance=1.0,
                                     size_m=200.0)
    cfg = SynthConfig.parallax(kinds=(("bridge", 1.0),), click_sigma_px=0.0, effects=FLAT,
                               reference_size=128, min_object_m2=60.0, max_tries=200,
                               camera=CameraRanges(altitude=(60.0, 90.0), pitch=(15.0, 35.0),
                                                   sizes=((384, 288),)))
    world = World.build(scene, cfg, st, ground)
    st = world.structures
    n = 0
    for s in generate([world], 6, seed=1, cfg=cfg, quiet=True):
        view = render_view(scene, s.camera, st, world.sun_azimuth, ground)
        # What each pixel shows (buildings, decks, the ground) is what its ray meets first.
        _assert_ray_cast(s.camera, view, st)
        a, _, c, _, e, f = s.transform
        for click, gxy, z, box, kind in zip(s.clicks, s.ground, s.heights, s.boxes, s.kinds,
                                            strict=True):
            i = int(np.argmin(np.abs(st.points - gxy).sum(axis=1)))
            assert kind == "bridge" and st.kinds[i] == BRIDGE and st.heights[i] == z
            fp = st.footprints[i]
            want = [(fp[:, 0].min() - c) / a, (fp[:, 1].max() - f) / e,
                    (fp[:, 0].max() - c) / a, (fp[:, 1].min() - f) / e]
            np.testing.assert_allclose(box, want, rtol=0, atol=1e-6)
            # On the deck plane the click is the deck's centroid, inside its footprint, and
            # the photo shows the deck's top there.
            xy = s.camera.photo_to_plane(click[None], z)[0]
            np.testing.assert_allclose(xy, gxy, rtol=0, atol=1e-6)
            edge = np.roll(fp, -1, axis=0) - fp
            assert ((edge[:, 0] * (xy[1] - fp[:, 1]) - edge[:, 1] * (xy[0] - fp[:, 0])) > 0).all()
            assert view.labels[int(click[1]), int(click[0])] == 2 * i
            n += 1
    assert n >= 6


def test_parallax_towns_have_bridges_default_ones_do_not() -> None:
    cfg = SynthConfig.parallax()
    assert cfg.bridges() and not SynthConfig().bridges()
    assert not SynthConfig(kinds=(("bridge", 1.0),)).bridges()  # no prisms: flat, no decks
    with pytest.raises(ValueError, match="piers"):
        SynthConfig.parallax(kinds=(("building", 1.0), ("pier", 1.0)))
    worlds = build_worlds([], cfg, augment=False, procedural=2, seed=0)
    assert [int((w.structures.kinds == BRIDGE).sum()) for w in worlds] == [0, 6]
    assert worlds[0].ground is worlds[0].scene and worlds[1].ground is not worlds[1].scene
    (w,) = build_worlds([], SynthConfig(), augment=False, procedural=1, seed=0)
    assert w.ground is None and (w.structures.bases == 0).all()


# --------------------------------------------------------------------------------------------
# 3. The default output is unchanged

_HASH_SCRIPT = """
import hashlib
from geomogeo.data.synth.engine import SynthConfig, build_worlds, generate
no_bridges = (("blob", 1.0), ("building", 3.0), ("road", 1.0))
for cfg in (SynthConfig(), SynthConfig.parallax(kinds=no_bridges)):
    worlds = build_worlds([], cfg, augment=False, procedural=1, seed=3)
    h = hashlib.sha256(worlds[0].scene.image.tobytes())
    for s in generate(worlds, 2, seed=5, cfg=cfg, quiet=True):
        for part in (s.jpeg, s.boxes.tobytes(), s.clicks.tobytes(), str(s.kinds).encode()):
            h.update(part)
    print(h.hexdigest())
"""


def test_default_output_is_byte_identical_to_before_bridges(tmp_path: Path) -> None:
    """Procedural samples of the default configuration, and of the parallax one without the
    bridge kind, are byte for byte those of the code before bridges (its package extracted
    from git and run in a subprocess on this machine, so no digest depends on the CPU).
    Update ``BEFORE_BRIDGES`` when the default output changes on purpose."""
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE_BRIDGES,
                                  "geomogeo"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("the commit before bridges is not in this checkout's git history")
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive, check=True)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    before = subprocess.run([sys.executable, "-c", _HASH_SCRIPT], env=env, cwd=tmp_path,
                            capture_output=True, text=True, check=True).stdout
    assert len(before.split()) == 2
    now = io.StringIO()
    with contextlib.redirect_stdout(now):
        exec(_HASH_SCRIPT, {})  # this tree, as imported by the tests
    assert now.getvalue() == before
