"""Joint augmentations: boxes and clicks follow the pixels they point at, exactly."""

from __future__ import annotations

import math

import pytest
import torch

from geomogeo.data.augment import (
    AugmentConfig,
    augment_batch,
    bbox_safe_crop,
    hflip_pair,
    photometric,
    rot90_pair,
)

Pixel = tuple[int, int, int]  # (photo b, row, col)


def _scene(
    R: int,
    QH: int,
    QW: int,
    ref_px: list[Pixel],
    qry_px: list[Pixel],
    B: int = 2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dark images with one bright pixel per target; target t's pixels have value t + 1.

    Boxes are asymmetric around the reference pixel; clicks sit off-centre inside the query pixel
    (x = col + 0.3, y = row + 0.7), so a wrong mirror or axis swap changes the containing pixel.
    """
    ref = torch.zeros(B, 3, R, R)
    qry = torch.zeros(B, 3, QH, QW)
    boxes, clicks, bidx = [], [], []
    for t, ((b, r, c), (bq, rq, cq)) in enumerate(zip(ref_px, qry_px, strict=True)):
        assert b == bq
        ref[b, :, r, c] = t + 1.0
        qry[bq, :, rq, cq] = t + 1.0
        boxes.append([max(c - 2, 0), max(r - 1, 0), min(c + 3, R), min(r + 4, R)])
        clicks.append([cq + 0.3, rq + 0.7])
        bidx.append(b)
    return (
        ref,
        qry,
        torch.tensor(clicks, dtype=torch.float32).view(-1, 2),
        torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
        torch.tensor(bidx, dtype=torch.long),
    )


def _where(img: torch.Tensor, b: int, value: float) -> tuple[int, int]:
    """(row, col) of the single pixel of photo b whose channel 0 equals ``value``."""
    hits = (img[b, 0] == value).nonzero()
    assert hits.shape[0] == 1, f"expected one pixel with value {value}, found {hits.shape[0]}"
    return int(hits[0, 0]), int(hits[0, 1])


def _assert_consistent(
    ref: torch.Tensor,
    qry: torch.Tensor,
    clicks: torch.Tensor,
    boxes: torch.Tensor,
    bidx: torch.Tensor,
) -> None:
    """Every target's bright pixel lies in its box (reference) and under its click (query)."""
    for t in range(boxes.shape[0]):
        b = int(bidx[t])
        r, c = _where(ref, b, t + 1.0)
        x1, y1, x2, y2 = boxes[t].tolist()
        assert x1 <= c and c + 1 <= x2 and y1 <= r and r + 1 <= y2, (t, (r, c), boxes[t])
        rq, cq = _where(qry, b, t + 1.0)
        x, y = clicks[t].tolist()
        assert (math.floor(y), math.floor(x)) == (rq, cq), (t, (rq, cq), clicks[t])


# Photo 0 has three targets, photo 1 has one.
REF_PX = [(0, 2, 3), (0, 10, 12), (0, 5, 0), (1, 13, 6)]
QRY_PX = [(0, 1, 4), (0, 9, 2), (0, 6, 11), (1, 0, 15)]


# --------------------------------------------------------------------------------------------
# horizontal flip
# --------------------------------------------------------------------------------------------


def test_hflip_mixed_batch_moves_targets_with_pixels() -> None:
    ref, qry, clicks, boxes, bidx = _scene(16, 12, 20, REF_PX, QRY_PX)
    flip = torch.tensor([True, False])
    out = hflip_pair(ref, qry, clicks, boxes, bidx, flip)
    _assert_consistent(*out, bidx)
    r2, q2, c2, b2 = out
    # Photo 0 mirrored: x -> W - x; photo 1 bit-for-bit unchanged.
    assert torch.equal(r2[0], ref[0].flip(-1)) and torch.equal(q2[0], qry[0].flip(-1))
    assert torch.equal(r2[1], ref[1]) and torch.equal(q2[1], qry[1])
    assert torch.allclose(c2[:3, 0], 20 - clicks[:3, 0]) and torch.equal(c2[:3, 1], clicks[:3, 1])
    assert torch.equal(b2[:3, 0], 16 - boxes[:3, 2]) and torch.equal(b2[:3, 2], 16 - boxes[:3, 0])
    assert torch.equal(b2[:3, 1::2], boxes[:3, 1::2])
    assert torch.equal(c2[3], clicks[3]) and torch.equal(b2[3], boxes[3])


def test_hflip_exact_pixel_box_maps_to_mirrored_pixel_box() -> None:
    ref = torch.zeros(1, 3, 8, 8)
    qry = torch.zeros(1, 3, 8, 6)
    boxes = torch.tensor([[2.0, 3.0, 3.0, 4.0]])
    clicks = torch.tensor([[0.5, 0.5]])
    out = hflip_pair(ref, qry, clicks, boxes, torch.tensor([0]), torch.tensor([True]))
    assert out[3].tolist() == [[5.0, 3.0, 6.0, 4.0]]
    assert out[2].tolist() == [[5.5, 0.5]]


def test_hflip_twice_is_identity_and_inputs_untouched() -> None:
    ref, qry, clicks, boxes, bidx = _scene(16, 12, 20, REF_PX, QRY_PX)
    ref, qry = ref + torch.rand(ref.shape), qry + torch.rand(qry.shape)
    # Dyadic fractions make W - (W - x) exact in float32; other values round-trip to ~1 ulp.
    clicks = clicks.floor() + torch.tensor([0.25, 0.625])
    copies = [x.clone() for x in (ref, qry, clicks, boxes)]
    flip = torch.tensor([True, True])
    once = hflip_pair(ref, qry, clicks, boxes, bidx, flip)
    twice = hflip_pair(*once, bidx, flip)
    for a, b in zip(twice, copies, strict=True):
        assert torch.equal(a, b)
    for a, b in zip((ref, qry, clicks, boxes), copies, strict=True):
        assert torch.equal(a, b)
    odd = clicks + 0.1
    back = hflip_pair(*hflip_pair(ref, qry, odd, boxes, bidx, flip), bidx, flip)[2]
    assert torch.allclose(back, odd, atol=1e-5, rtol=0)


def test_hflip_all_false_returns_equal_new_tensors() -> None:
    ref, qry, clicks, boxes, bidx = _scene(16, 12, 20, REF_PX, QRY_PX)
    out = hflip_pair(ref, qry, clicks, boxes, bidx, torch.tensor([False, False]))
    for a, b in zip(out, (ref, qry, clicks, boxes), strict=True):
        assert torch.equal(a, b)
        assert a.data_ptr() != b.data_ptr()


def test_hflip_rejects_bad_flip_shape() -> None:
    ref, qry, clicks, boxes, bidx = _scene(16, 12, 20, REF_PX, QRY_PX)
    with pytest.raises(ValueError, match="flip"):
        hflip_pair(ref, qry, clicks, boxes, bidx, torch.tensor([True]))


# --------------------------------------------------------------------------------------------
# quarter turns
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rot90_moves_targets_with_pixels(k: int) -> None:
    ref, qry, clicks, boxes, bidx = _scene(16, 20, 20, REF_PX, QRY_PX)
    out = rot90_pair(ref, qry, clicks, boxes, bidx, torch.tensor([k, k]))
    _assert_consistent(*out, bidx)
    assert torch.equal(out[0], torch.rot90(ref, k, dims=(-2, -1)))
    assert torch.equal(out[1], torch.rot90(qry, k, dims=(-2, -1)))


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rot90_mixed_k_per_photo(k: int) -> None:
    ref, qry, clicks, boxes, bidx = _scene(16, 20, 20, REF_PX, QRY_PX)
    ks = torch.tensor([k, (k + 1) % 4])
    out = rot90_pair(ref, qry, clicks, boxes, bidx, ks)
    _assert_consistent(*out, bidx)
    for b in range(2):
        assert torch.equal(out[0][b], torch.rot90(ref[b], int(ks[b]), dims=(-2, -1)))
        assert torch.equal(out[1][b], torch.rot90(qry[b], int(ks[b]), dims=(-2, -1)))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rot90_exact_point_mapping_for_every_pixel(k: int) -> None:
    """Every pixel's exact box and centre go where torch.rot90 sends the pixel."""
    S = 5
    ref = torch.arange(S * S, dtype=torch.float32).view(1, 1, S, S).expand(1, 3, S, S)
    rows, cols = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    rows, cols = rows.reshape(-1).float(), cols.reshape(-1).float()
    boxes = torch.stack((cols, rows, cols + 1, rows + 1), dim=1)
    clicks = torch.stack((cols + 0.25, rows + 0.75), dim=1)
    bidx = torch.zeros(S * S, dtype=torch.long)
    r2, q2, c2, b2 = rot90_pair(ref, ref.clone(), clicks, boxes, bidx, torch.tensor([k]))
    for t in range(S * S):
        x1, y1, x2, y2 = (int(v) for v in b2[t].tolist())
        assert (x2 - x1, y2 - y1) == (1, 1)
        assert float(r2[0, 0, y1, x1]) == float(t)
        x, y = c2[t].tolist()
        assert float(q2[0, 0, math.floor(y), math.floor(x)]) == float(t)
    if k == 1:  # the documented single-step rule (x, y) -> (y, S - x)
        assert torch.allclose(c2, torch.stack((clicks[:, 1], S - clicks[:, 0]), dim=1))


def test_rot90_four_times_is_identity() -> None:
    ref, qry, clicks, boxes, bidx = _scene(16, 20, 20, REF_PX, QRY_PX)
    ref, qry = ref + torch.rand(ref.shape), qry + torch.rand(qry.shape)
    clicks = clicks.floor() + torch.tensor([0.125, 0.375])  # dyadic: exact round trip
    state = (ref, qry, clicks, boxes)
    k = torch.tensor([1, 3])
    for _ in range(4):
        state = rot90_pair(*state, bidx, k)
    for a, b in zip(state, (ref, qry, clicks, boxes), strict=True):
        assert torch.equal(a, b)


def test_rot90_requires_square_query() -> None:
    ref, qry, clicks, boxes, bidx = _scene(16, 12, 20, REF_PX, QRY_PX)
    with pytest.raises(ValueError, match="square query"):
        rot90_pair(ref, qry, clicks, boxes, bidx, torch.tensor([1, 0]))


def test_rot90_handles_no_targets() -> None:
    ref, qry = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 6, 6)
    out = rot90_pair(
        ref,
        qry,
        torch.zeros(0, 2),
        torch.zeros(0, 4),
        torch.zeros(0, dtype=torch.long),
        torch.tensor([1, 2]),
    )
    assert out[2].shape == (0, 2) and out[3].shape == (0, 4)
    assert torch.equal(out[0][1], torch.rot90(ref[1], 2, dims=(-2, -1)))


# --------------------------------------------------------------------------------------------
# photometric
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hue_shift", [0.0, 0.1])
def test_photometric_stays_in_range_and_changes_image(hue_shift: float) -> None:
    img = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    copy = img.clone()
    out = photometric(img, torch.Generator().manual_seed(1), hue_shift=hue_shift)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.allclose(out, img, atol=1e-3)
    assert torch.equal(img, copy)


def test_photometric_extreme_inputs_stay_in_range() -> None:
    img = torch.cat((torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)))
    out = photometric(
        img,
        torch.Generator().manual_seed(3),
        brightness=1.0,
        contrast=1.0,
        saturation=1.0,
        hue_shift=0.5,
        noise_std=0.5,
    )
    assert torch.isfinite(out).all()
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_photometric_is_deterministic_per_seed_and_per_image() -> None:
    img = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = photometric(img, torch.Generator().manual_seed(7))
    b = photometric(img, torch.Generator().manual_seed(7))
    c = photometric(img, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Same content in both slots still gets different per-image factors.
    twin = photometric(img[:1].expand(2, -1, -1, -1), torch.Generator().manual_seed(7))
    assert not torch.allclose(twin[0], twin[1])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"brightness": -0.1},
        {"contrast": 1.5},
        {"hue_shift": 0.6},
        {"gamma": (0.0, 1.0)},
        {"gamma": (1.2, 0.8)},
        {"noise_std": -1.0},
    ],
)
def test_photometric_rejects_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        photometric(torch.rand(1, 3, 4, 4), torch.Generator().manual_seed(0), **kwargs)


def test_photometric_requires_rgb() -> None:
    with pytest.raises(ValueError, match="RGB"):
        photometric(torch.rand(1, 1, 4, 4), torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------------------------
# box-safe crop
# --------------------------------------------------------------------------------------------


def _bright_ref(R: int, px: list[Pixel], B: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ref = torch.zeros(B, 3, R, R)
    boxes, bidx = [], []
    for b, r, c in px:
        ref[b, :, r, c] = 1.0
        boxes.append([c, r, c + 1, r + 1])
        bidx.append(b)
    return ref, torch.tensor(boxes, dtype=torch.float32), torch.tensor(bidx, dtype=torch.long)


@pytest.mark.parametrize("seed", range(8))
def test_bbox_safe_crop_keeps_boxes_and_pixels(seed: int) -> None:
    R = 32
    px = [(0, 4, 20), (1, 16, 16), (2, 30, 1)]  # one target per photo, so argmax is unambiguous
    ref, boxes, bidx = _bright_ref(R, px, B=3)
    out, nb = bbox_safe_crop(ref, boxes, bidx, torch.Generator().manual_seed(seed), 0.5)
    assert out.shape == ref.shape
    assert float(nb.min()) >= 0.0 and float(nb.max()) <= R
    assert (nb[:, 2] > nb[:, 0]).all() and (nb[:, 3] > nb[:, 1]).all()
    assert float((nb[:, 2] - nb[:, 0]).max()) > 1.01  # something was actually zoomed
    for t, (b, _, _) in enumerate(px):
        flat = int(out[b, 0].argmax())
        r, c = divmod(flat, R)
        x1, y1, x2, y2 = nb[t].tolist()
        # Pixel centre inside the box, with one pixel of interpolation slack.
        assert x1 - 1 <= c + 0.5 <= x2 + 1 and y1 - 1 <= r + 0.5 <= y2 + 1, (t, (r, c), nb[t])
        # A zoom-in never shrinks a box.
        assert x2 - x1 >= 1 - 1e-5 and y2 - y1 >= 1 - 1e-5


def test_bbox_safe_crop_zooms_and_keeps_all_boxes_of_a_photo() -> None:
    R = 40
    ref = torch.rand(2, 3, R, R, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[2.0, 3, 6, 9], [30, 28, 37, 35], [10, 10, 20, 20], [0, 0, 2, 2]])
    bidx = torch.tensor([0, 0, 0, 1])
    gen = torch.Generator().manual_seed(4)
    _, nb = bbox_safe_crop(ref, boxes, bidx, gen, min_scale=0.5)
    assert float(nb.min()) >= 0.0 and float(nb.max()) <= R
    # Scale is the same for all boxes of a photo and >= 1 (zoom-in).
    scale = (nb[:, 2] - nb[:, 0]) / (boxes[:, 2] - boxes[:, 0])
    scale_y = (nb[:, 3] - nb[:, 1]) / (boxes[:, 3] - boxes[:, 1])
    assert torch.allclose(scale, scale_y, atol=1e-4)
    assert torch.allclose(scale[:3], scale[0].expand(3), atol=1e-4)
    assert (scale >= 1 - 1e-5).all()
    # Photo 0's union spans 35 px of 40, so its side is at least 35: scale <= 40 / 35.
    assert float(scale[0]) <= R / 35 + 1e-4
    assert float(scale[3]) <= 2.0 + 1e-4


def test_bbox_safe_crop_full_image_box_means_no_crop() -> None:
    R = 16
    ref = torch.rand(1, 3, R, R, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[0.0, 1.0, 16.0, 5.0]])
    out, nb = bbox_safe_crop(ref, boxes, torch.tensor([0]), torch.Generator().manual_seed(0), 0.5)
    assert torch.allclose(nb, boxes, atol=1e-4)
    assert torch.allclose(out, ref, atol=1e-5)


def test_bbox_safe_crop_photo_without_boxes_and_validation() -> None:
    ref = torch.rand(2, 3, 16, 16)
    boxes, bidx = torch.tensor([[1.0, 1, 4, 4]]), torch.tensor([1])
    out, nb = bbox_safe_crop(ref, boxes, bidx, torch.Generator().manual_seed(0), 0.6)
    assert out.shape == ref.shape and nb.shape == boxes.shape
    with pytest.raises(ValueError, match="min_scale"):
        bbox_safe_crop(ref, boxes, bidx, torch.Generator(), 0.0)
    with pytest.raises(ValueError, match="batch_index"):
        bbox_safe_crop(ref, boxes, torch.tensor([2]), torch.Generator(), 0.7)


# --------------------------------------------------------------------------------------------
# config and pipeline
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"flip_p": -0.1},
        {"flip_p": 1.5},
        {"crop_p": 2.0},
        {"crop_p": -1e-3},
        {"crop_min_scale": 0.0},
        {"crop_min_scale": 1.2},
    ],
)
def test_augment_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        AugmentConfig(**kwargs)


def test_augment_config_defaults_and_frozen() -> None:
    cfg = AugmentConfig()
    assert (cfg.flip_p, cfg.rot90, cfg.photometric, cfg.crop_p, cfg.crop_min_scale) == (
        0.5,
        True,
        True,
        0.0,
        0.7,
    )
    with pytest.raises(AttributeError):
        cfg.flip_p = 0.1  # type: ignore[misc]


@pytest.mark.parametrize("seed", range(6))
def test_augment_batch_geometry_stays_consistent(seed: int) -> None:
    ref, qry, clicks, boxes, bidx = _scene(16, 20, 20, REF_PX, QRY_PX)
    cfg = AugmentConfig(flip_p=0.5, rot90=True, photometric=False)
    out = augment_batch(ref, qry, clicks, boxes, bidx, cfg, torch.Generator().manual_seed(seed))
    assert torch.equal(out[4], bidx)
    _assert_consistent(*out[:4], out[4])


def test_augment_batch_is_deterministic_per_seed() -> None:
    g = torch.Generator().manual_seed(0)
    ref, qry = torch.rand(3, 3, 24, 24, generator=g), torch.rand(3, 3, 16, 16, generator=g)
    clicks = torch.tensor([[3.5, 4.5], [10.2, 1.1], [8.0, 8.0], [15.9, 0.1]])
    boxes = torch.tensor([[1.0, 2, 6, 7], [10, 12, 20, 22], [0, 0, 24, 3], [5, 5, 6, 6]])
    bidx = torch.tensor([0, 0, 1, 2])
    cfg = AugmentConfig(crop_p=0.5, crop_min_scale=0.6)
    a = augment_batch(ref, qry, clicks, boxes, bidx, cfg, torch.Generator().manual_seed(5))
    b = augment_batch(ref, qry, clicks, boxes, bidx, cfg, torch.Generator().manual_seed(5))
    c = augment_batch(ref, qry, clicks, boxes, bidx, cfg, torch.Generator().manual_seed(6))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    for img in a[:2]:
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    assert float(a[3].min()) >= 0.0 and float(a[3].max()) <= 24


def test_augment_batch_with_crop_keeps_pixels_in_boxes() -> None:
    R = 32
    px = [(0, 4, 20), (1, 16, 16), (2, 30, 1), (3, 0, 31)]
    ref, boxes, bidx = _bright_ref(R, px, B=4)
    qry = torch.zeros(4, 3, 8, 8)
    clicks = torch.full((4, 2), 4.5)
    cfg = AugmentConfig(flip_p=0.5, rot90=True, photometric=False, crop_p=1.0, crop_min_scale=0.5)
    for seed in range(4):
        r2, _, _, nb, _ = augment_batch(
            ref, qry, clicks, boxes, bidx, cfg, torch.Generator().manual_seed(seed)
        )
        for t, (b, _, _) in enumerate(px):
            r, c = divmod(int(r2[b, 0].argmax()), R)
            x1, y1, x2, y2 = nb[t].tolist()
            assert x1 - 1 <= c + 0.5 <= x2 + 1 and y1 - 1 <= r + 0.5 <= y2 + 1


def test_augment_batch_all_disabled_returns_equal_copies() -> None:
    ref, qry, clicks, boxes, bidx = _scene(16, 12, 20, REF_PX, QRY_PX)
    cfg = AugmentConfig(flip_p=0.0, rot90=False, photometric=False, crop_p=0.0)
    out = augment_batch(ref, qry, clicks, boxes, bidx, cfg, torch.Generator().manual_seed(0))
    for a, b in zip(out, (ref, qry, clicks, boxes, bidx), strict=True):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()


def test_augment_batch_rot90_needs_square_query() -> None:
    ref, qry, clicks, boxes, bidx = _scene(16, 12, 20, REF_PX, QRY_PX)
    with pytest.raises(ValueError, match="square query"):
        augment_batch(ref, qry, clicks, boxes, bidx, AugmentConfig(), torch.Generator())
