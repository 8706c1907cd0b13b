"""Resolution buckets and the official image-to-video image transform."""

import numpy as np
import pytest

from hcjax.pipelines import buckets


def test_bucket_list_and_choice():
    sizes = buckets.crop_size_list(960)
    assert all(a % 32 == 0 and b % 32 == 0 and a * b <= 960 * 960 for a, b in sizes)
    assert (960, 960) in sizes and max(max(a, b) / min(a, b) for a, b in sizes) <= 4.0
    assert buckets.i2v_bucket(720, 1280, "720p") == (704, 1248)     # 16:9 landscape
    assert buckets.i2v_bucket(1280, 720, "720p") == (1248, 704)
    assert buckets.i2v_bucket(500, 500, "540p") == (704, 704)   # 506 patches: 22 x 22 at most
    assert buckets.i2v_bucket(480, 640, "360p")[0] < buckets.i2v_bucket(480, 640, "360p")[1]
    with pytest.raises(ValueError, match="resolution"):
        buckets.i2v_bucket(720, 1280, "1080p")


def _marked(h, w):
    """An image whose centre pixel block is red and whose border is green."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 1] = 200
    img[h // 2 - 4:h // 2 + 4, w // 2 - 4:w // 2 + 4] = (255, 0, 0)
    return img


def test_official_transform_shapes_and_quirk():
    """Same orientation, non-square: the shorter side goes to the bucket's longer side (a centre zoom, as the
    official code does); square images are scaled to fit exactly."""
    out = buckets.i2v_image(_marked(720, 1280), 704, 1248, fit="official")
    assert out.shape == (704, 1248, 3)
    red = np.argwhere(out[..., 0] > 128)
    np.testing.assert_allclose(red.mean(0), [352, 624], atol=2)           # centred
    assert np.ptp(red[:, 0]) > 8 * 1248 / 720 * 0.9                          # zoomed by ~1248/720
    square = buckets.i2v_image(_marked(500, 500), 704, 704)
    assert abs((square[..., 0] > 128).sum() - (8 * 704 / 500) ** 2) < 60   # plain 704/500 scale


def test_cover_fit_keeps_scale():
    out = buckets.i2v_image(_marked(720, 1280), 704, 1248, fit="cover")
    assert out.shape == (704, 1248, 3)
    red = np.argwhere(out[..., 0] > 128)
    assert np.ptp(red[:, 0]) < 12                                             # scale ~0.98, no zoom
    with pytest.raises(ValueError, match="fit"):
        buckets.i2v_image(_marked(10, 10), 32, 32, fit="stretch")


def test_center_crop_pads_like_torchvision():
    """A crop larger than the image pads with zeros around it (torchvision CenterCrop)."""
    out = buckets._center_crop(np.full((4, 6, 3), 9, np.uint8), 8, 6)
    assert out.shape == (8, 6, 3) and (out[:2] == 0).all() and (out[2:6] == 9).all() and (out[6:] == 0).all()
