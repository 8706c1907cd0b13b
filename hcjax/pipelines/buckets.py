"""Resolutions: the T2V buckets and the image-to-video bucket picked from the image's aspect ratio.

The I2V transform reproduces the official one (``hyvideo/inference.py`` of HunyuanVideo-I2V): buckets of
``(base / 32)^2`` 32-pixel patches, the one whose h/w ratio is closest to the image's, then
``Resize(shorter side -> s)`` + ``CenterCrop(bucket)`` + ``Normalize(0.5, 0.5)``. Its ``s`` has a quirk: when
the image and bucket have the same orientation the shorter side goes to the bucket's *longer* side, so a
non-square image is zoomed into its centre (``fit="official"``). ``fit="cover"`` scales just enough to
cover the bucket instead.
"""

from __future__ import annotations

import numpy as np

T2V_BUCKETS = {  # (height, width), all 129 frames
    "540p": ((544, 960), (960, 544), (624, 832), (832, 624), (720, 720)),
    "720p": ((720, 1280), (1280, 720), (1104, 832), (832, 1104), (960, 960)),
}
I2V_BASE_SIZE = {"360p": 480, "540p": 720, "720p": 960}


def crop_size_list(base_size: int, patch: int = 32, max_ratio: float = 4.0) -> list[tuple[int, int]]:
    """Every ``(a * patch, b * patch)`` with ``a * b`` at most ``(base/patch)^2`` patches, walking from the
    widest to the tallest, aspect at most ``max_ratio`` (the official bucket list)."""
    num_patches = round((base_size / patch) ** 2)
    out, wp, hp = [], num_patches, 1
    while wp > 0:
        if max(wp, hp) / min(wp, hp) <= max_ratio:
            out.append((wp * patch, hp * patch))
        if (hp + 1) * wp <= num_patches:
            hp += 1
        else:
            wp -= 1
    return out


def i2v_bucket(height: int, width: int, resolution: str = "720p") -> tuple[int, int]:
    """The ``(height, width)`` bucket for an image of that size (closest h/w ratio, rounded to 5 places)."""
    if resolution not in I2V_BASE_SIZE:
        raise ValueError(f"resolution {resolution!r} not in {sorted(I2V_BASE_SIZE)}")
    sizes = crop_size_list(I2V_BASE_SIZE[resolution])
    ratios = np.array([round(h / w, 5) for h, w in sizes])
    return sizes[int(np.abs(ratios - height / width).argmin())]


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """torchvision's CenterCrop: zero padding where the image is smaller, offsets rounded half to even."""
    h, w = image.shape[:2]
    if h < height or w < width:
        top, left = max(height - h, 0) // 2, max(width - w, 0) // 2
        padded = np.zeros((max(h, height), max(w, width), 3), image.dtype)
        padded[top:top + h, left:left + w] = image
        image, (h, w) = padded, padded.shape[:2]
    top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
    return image[top:top + height, left:left + width]


def i2v_image(image: np.ndarray, height: int, width: int, fit: str = "official") -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> uint8 ``[height, width, 3]`` as the official I2V transform (see module doc)."""
    h, w = image.shape[:2]
    if fit == "official":
        image_ratio, bucket_ratio = h / w, width / height   # as written there: h/w against w/h
        both_above = image_ratio > 1 and bucket_ratio > 1
        both_below = image_ratio < 1 and bucket_ratio < 1
        short = min(height, width) if bucket_ratio == 1.0 or both_above or both_below else max(height, width)
    elif fit == "cover":
        from hcjax.io import resize_center_crop

        return resize_center_crop(image, height, width)
    else:
        raise ValueError(f"fit must be 'official' or 'cover', got {fit!r}")
    if h <= w:
        new_h, new_w = short, int(short * w / h)
    else:
        new_h, new_w = int(short * h / w), short
    return _center_crop(_resize(image, new_h, new_w), height, width)

