"""HunyuanCustom's pixel inputs, as its data loader prepares them (reference sections 6.1 and 6.3).

* Reference images: padded to the video size on white (``custom_text.pad_image``), to [-1, 1].
* Editing: the mask video to grayscale (the loader's ``cv2.cvtColor(BGR2GRAY)`` on RGB frames, so the weights
  of R and B are swapped; irrelevant for black / white masks), optionally dilated (``expand_scale > 0``) or
  eroded (``< 0``) by an elliptical kernel of size ``|expand_scale|`` three times, thresholded at 127.5; the
  masked video is the source with the masked area black. Both to [-1, 1], the mask on 3 channels.
"""

from __future__ import annotations

import numpy as np

from hcjax.pipelines.custom_text import pad_image

GRAY_WEIGHTS_RGB_AS_BGR = np.array([0.114, 0.587, 0.299], np.float64)   # BGR2GRAY applied to RGB frames
MORPH_ITERATIONS = 3


def reference_pixels(images, height: int, width: int) -> np.ndarray:
    """RGB uint8 images -> float32 ``[n, height, width, 3]`` in [-1, 1], each padded to the video size."""
    return np.stack([pad_image(np.asarray(im), (height, width)).astype(np.float32) / 127.5 - 1.0 for im in images])


def ellipse_kernel(size: int) -> np.ndarray:
    """``cv2.getStructuringElement(MORPH_ELLIPSE, (size, size))`` as a bool ``[size, size]`` array."""
    r = c = size // 2
    kernel = np.zeros((size, size), bool)
    for i in range(size):
        dy = i - r
        if abs(dy) <= r:
            dx = int(round(c * np.sqrt((r * r - dy * dy) / (r * r)))) if r else 0
            kernel[i, max(c - dx, 0):min(c + dx + 1, size)] = True
    return kernel


def morph(mask: np.ndarray, kernel: np.ndarray, dilate: bool) -> np.ndarray:
    """One dilation (max) or erosion (min) of ``uint8 [..., H, W]`` by ``kernel`` anchored at its centre;
    outside the image counts as neutral (cv2's default border)."""
    kh, kw = kernel.shape
    ay, ax = kh // 2, kw // 2
    fill = 0 if dilate else 255
    padded = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(ay, kh - 1 - ay), (ax, kw - 1 - ax)], constant_values=fill)
    h, w = mask.shape[-2:]
    out = np.full_like(mask, fill)
    pick = np.maximum if dilate else np.minimum
    for dy, dx in zip(*np.nonzero(kernel)):
        out = pick(out, padded[..., dy:dy + h, dx:dx + w])
    return out


def binary_mask(mask_frames: np.ndarray, expand_scale: int = 0) -> np.ndarray:
    """uint8 RGB ``[F, H, W, 3]`` (or gray ``[F, H, W]``) -> uint8 ``[F, H, W]`` in {0, 255}."""
    m = np.asarray(mask_frames)
    if m.ndim == 4:
        m = np.clip(np.rint(m.astype(np.float64) @ GRAY_WEIGHTS_RGB_AS_BGR), 0, 255).astype(np.uint8)
    if expand_scale:
        kernel = ellipse_kernel(abs(expand_scale))
        for _ in range(MORPH_ITERATIONS):
            m = morph(m, kernel, dilate=expand_scale > 0)
    return np.where(m > 127.5, 255, 0).astype(np.uint8)


def editing_pixels(video: np.ndarray, mask_frames: np.ndarray, expand_scale: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(masked video, mask)``, each float32 ``[F, H, W, 3]`` in [-1, 1], from uint8 RGB source and mask videos
    of the same frame count and size."""
    mask = binary_mask(mask_frames, expand_scale)
    keep = (mask == 0)[..., None]
    masked = np.asarray(video) * keep.astype(np.uint8)
    to_unit = lambda x: x.astype(np.float32) / 255.0 * 2.0 - 1.0   # noqa: E731
    return to_unit(masked), to_unit(np.repeat(mask[..., None], 3, axis=-1))
