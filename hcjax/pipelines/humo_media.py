"""HuMo's pixel inputs and the face-mask outputs (reference B.2).

* Reference images: each resized with its aspect ratio kept to fit inside the video's ``(width, height)``
  (Pillow LANCZOS; the limiting side takes the target length, the other ``int(...)`` truncated), centred on a
  **white** canvas of exactly ``(width, height)`` (the odd pixel of padding right / bottom), mapped to [-1, 1]
  (``ToTensor`` + ``Normalize(0.5, 0.5)``). The pipeline encodes each as a one-frame video.
* Face masks (``--mask-out``): ``.npy`` keeps the float32 probabilities ``[T, h, w]`` at latent size; ``.png``
  is a strip of the ``T`` latent frames left to right, each upscaled to the video size (nearest, x the VAE's
  spatial ratio), gray 0 = 0.0, 255 = 1.0, with 2 white pixels between frames.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from hcjax.io import atomic_output, image_to_unit_range, write_png

MASK_SUFFIXES = (".npy", ".png")
STRIP_GAP = 2


def reference_canvas(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> uint8 ``[height, width, 3]``: fitted inside (LANCZOS), centred on white."""
    from PIL import Image

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if w / h > width / height:                   # wider than the target: the width limits
        new_w, new_h = width, max(1, int(width * h / w))
    else:
        new_h, new_w = height, max(1, int(height * w / h))
    if (new_h, new_w) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.LANCZOS))
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out = np.full((height, width, 3), 255, np.uint8)
    out[top:top + new_h, left:left + new_w] = image
    return out


def reference_pixels(images: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """RGB uint8 images -> float32 ``[n, height, width, 3]`` in [-1, 1] (``reference_canvas`` each)."""
    return np.stack([image_to_unit_range(reference_canvas(im, height, width)) for im in images])


def mask_strip(probs: np.ndarray, scale: int = 8, gap: int = STRIP_GAP) -> np.ndarray:
    """Probabilities ``[T, h, w]`` in [0, 1] -> uint8 RGB ``[h s, T w s + (T - 1) gap, 3]`` (see module doc)."""
    p = np.clip(np.asarray(probs, np.float32), 0.0, 1.0)
    gray = np.round(p * 255.0).astype(np.uint8).repeat(scale, axis=1).repeat(scale, axis=2)
    t, h, w = gray.shape
    strip = np.full((h, t * w + (t - 1) * gap), 255, np.uint8)
    for i, frame in enumerate(gray):
        strip[:, i * (w + gap):i * (w + gap) + w] = frame
    return np.repeat(strip[..., None], 3, axis=-1)


def write_mask(path: str | os.PathLike, probs: np.ndarray, scale: int = 8) -> None:
    """Writes the face-mask probabilities ``[T, h, w]`` atomically: ``.npy`` as is, ``.png`` as ``mask_strip``."""
    path = os.fspath(path)
    if path.lower().endswith(".npy"):
        with atomic_output(path, suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, np.asarray(probs, np.float32))
    elif path.lower().endswith(".png"):
        write_png(path, mask_strip(probs, scale))
    else:
        raise ValueError(f"mask output {path!r} must end in {' or '.join(MASK_SUFFIXES)}")
