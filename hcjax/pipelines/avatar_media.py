"""HunyuanVideo-Avatar's media inputs, as its data loader and sampler prepare them (reference A.1, A.2.4, A.5).

* Reference image (``reference_size`` / ``reference_image``): scaled so its short side is ``image_size`` (704),
  each side rounded to a multiple of 64 (Python ``round``, i.e. half to even), capped in area at
  ``image_size * long_budget``, resized with Pillow LANCZOS. That size is also the generation size.
* LLaVA pixels (``llava_pixels_stretched``): the reference image *stretched* to 336 x 336 (torchvision
  ``Resize((336, 336), BILINEAR)`` on a PIL image = Pillow BILINEAR, antialiased when shrinking), CLIP-normalised.
  HunyuanCustom pads instead (``custom_text.pad_image``).
* Face masks (``face_box_mask`` ... ``face_masks``): the official ``get_facemask`` rectangle (the face box grown
  3x about its centre, clipped to the image) at pixel resolution, then torch's bilinear
  ``interpolate(align_corners=False)`` (no antialias) to the latent size (``latent_face_mask``). The release
  finds the box with a TorchScript face detector (none here): boxes are given by the user, in the pixels of the
  image they passed (``scale_box`` maps them onto the resized reference), or as mask images (white = face).
  ``None`` is the whole image, which is what the release uses when it finds no face.
* Audio (``avatar_audio``): mono float32 at 16 kHz via ``hcjax.io.audio.load_audio``, with clear errors for
  audio too short for one video frame or at an unusable sample rate.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from hcjax.io.audio import SAMPLE_RATE, frames_of_audio, load_audio
from hcjax.io.video import MediaError
from hcjax.pipelines.custom_text import normalize_clip

PathLike = str | os.PathLike
Box = tuple[float, float, float, float]
Face = Union[None, Sequence[float], PathLike, np.ndarray]
"""One character's face: ``None`` (whole image), a box ``(x, y, w, h)``, a mask image path, or a mask array."""

IMAGE_SIZE = 704
LONG_BUDGET = {704: 1216, 512: 768, 384: 576, 256: 384}   # image_size -> long side of the area cap
LLAVA_SIZE = 336
FACE_AREA = 3.0                  # ``get_facemask(..., area=3.0)`` in sample_inference_audio.py
VAE_STRIDE = 8
FPS = 25
MIN_SAMPLE_RATE = 8000           # below telephone rate there is no usable speech band for Whisper


def reference_size(height: int, width: int, image_size: int = IMAGE_SIZE) -> tuple[int, int]:
    """``(h, w)`` of the resized reference image (and of the video) for an ``height x width`` input: the official
    loader's rule, with the same float expressions and Python rounding (half to even)."""
    if height < 1 or width < 1:
        raise ValueError(f"reference image must be non-empty; got {height}x{width}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive; got {image_size}")
    if round(image_size / 64) == 0:
        raise ValueError(f"image_size {image_size} rounds to a side of 0 (sides are multiples of 64); use 704")
    h, w = int(height), int(width)
    scale = image_size / min(w, h)
    new_w, new_h = round(w * scale / 64) * 64, round(h * scale / 64) * 64
    long = LONG_BUDGET.get(image_size, image_size * 1.5)
    if new_w * new_h > image_size * long:
        scale = math.sqrt(image_size * long / w / h)
        new_w, new_h = round(w * scale / 64) * 64, round(h * scale / 64) * 64
    if new_w == 0 or new_h == 0:
        raise ValueError(f"a {height}x{width} (HxW) reference image is too elongated: at image_size {image_size} "
                         f"it resizes to {new_h}x{new_w}; crop it to an aspect ratio nearer 1 (below about "
                         f"{image_size * long / 32 ** 2:.0f}:1)")
    return new_h, new_w


def _rgb_uint8(image: np.ndarray, what: str = "reference image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"{what} must be a non-empty RGB uint8 array [H, W, 3]; got {image.dtype} {image.shape}")
    return image


def reference_image(image_uint8: np.ndarray, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """The RGB uint8 ``[H, W, 3]`` reference image resized to ``reference_size`` with Pillow LANCZOS (as
    ``Image.resize((w, h), Image.LANCZOS)`` in the official loader) -> uint8 ``[h, w, 3]``."""
    from PIL import Image

    image = _rgb_uint8(image_uint8)
    h, w = reference_size(*image.shape[:2], image_size)
    return np.asarray(Image.fromarray(image).resize((w, h), Image.LANCZOS))


def llava_pixels_stretched(image_uint8: np.ndarray, size: int = LLAVA_SIZE) -> np.ndarray:
    """Avatar's LLaVA input: the RGB uint8 image stretched to ``size x size`` (Pillow BILINEAR, what torchvision
    ``Resize((size, size))`` does to a PIL image), ``/ 255``, CLIP-normalised -> float32 ``[size, size, 3]``."""
    from PIL import Image

    image = _rgb_uint8(image_uint8)
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    return normalize_clip(resized)


def face_box_mask(height: int, width: int, box: Sequence[float], area: float = FACE_AREA) -> np.ndarray:
    """``get_facemask``'s rectangle: the box ``(x, y, box_w, box_h)`` grown by ``area`` in width and height about
    its centre (centre and half sizes by floor division, Python float semantics), clipped to the image, as
    float32 ``[height, width]`` in {0, 1}. The box is in pixels of the (resized) reference image."""
    x1, y1, bw, bh = (float(v) for v in box)
    w, h = int(width), int(height)
    x2, y2 = x1 + bw, y1 + bh
    ww, hh = (x2 - x1) * area, (y2 - y1) * area
    center = [(x2 + x1) // 2, (y2 + y1) // 2]
    x1 = max(center[0] - ww // 2, 0)
    y1 = max(center[1] - hh // 2, 0)
    x2 = min(center[0] + ww // 2, w)
    y2 = min(center[1] + hh // 2, h)
    mask = np.zeros((h, w), np.float32)
    mask[int(y1):int(y2), int(x1):int(x2)] = 1.0
    return mask


def parse_face_box(text: str) -> Box:
    """``"x,y,w,h"`` (pixels; spaces allowed) -> ``(x, y, w, h)`` floats."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        box = tuple(float(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ValueError(f"face box {text!r} is not of the form 'x,y,w,h' (four numbers: the top-left corner and "
                         f"the size of the face, in pixels of the input image), e.g. '120,80,200,240'")
    return box  # type: ignore[return-value]


def check_face_box(box: Sequence[float], height: int, width: int, what: str = "face box") -> None:
    """Raises ``ValueError`` unless ``box = (x, y, w, h)`` has a positive size and lies inside the ``height x
    width`` image (corners in ``[0, width] x [0, height]``)."""
    if len(box) != 4:
        raise ValueError(f"{what} must be (x, y, w, h); got {tuple(box)}")
    x, y, bw, bh = (float(v) for v in box)
    fix = (f"give x,y,w,h in pixels of the {width}x{height} (WxH) input image, with w, h > 0, "
           f"0 <= x, x + w <= {width}, 0 <= y, y + h <= {height}")
    if not all(math.isfinite(v) for v in (x, y, bw, bh)):
        raise ValueError(f"{what} {tuple(box)} has non-finite values; {fix}")
    if bw <= 0 or bh <= 0:
        raise ValueError(f"{what} {tuple(box)} has a {'zero' if min(bw, bh) == 0 else 'negative'} size "
                         f"({bw:g}x{bh:g}); {fix}")
    if x < 0 or y < 0 or x + bw > width or y + bh > height:
        raise ValueError(f"{what} {tuple(box)} (corners ({x:g}, {y:g}) and ({x + bw:g}, {y + bh:g})) is not inside "
                         f"the {width}x{height} (WxH) image; {fix}")


def scale_box(box: Sequence[float], orig_hw: tuple[int, int], new_hw: tuple[int, int]) -> Box:
    """A box ``(x, y, w, h)`` in the pixels of an ``orig_hw`` image mapped onto the image resized to ``new_hw``
    (x and w scale by ``new_w / orig_w``, y and h by ``new_h / orig_h``)."""
    sy, sx = new_hw[0] / orig_hw[0], new_hw[1] / orig_hw[1]
    x, y, bw, bh = (float(v) for v in box)
    return x * sx, y * sy, bw * sx, bh * sy


def mask_image(path_or_array: PathLike | np.ndarray, height: int, width: int) -> np.ndarray:
    """A user face mask (white = face region; a file or a uint8 / bool array, gray or RGB) -> float32
    ``[height, width]`` in {0, 1}: gray (Pillow ``L``), Pillow BILINEAR to the size, ``/ 255 > 0.5``."""
    from PIL import Image

    if isinstance(path_or_array, np.ndarray):
        what = f"mask array {path_or_array.dtype} {path_or_array.shape}"
        array = path_or_array.astype(np.uint8) * 255 if path_or_array.dtype == bool else path_or_array
        if array.dtype != np.uint8 or array.ndim not in (2, 3) or 0 in array.shape or (
                array.ndim == 3 and array.shape[-1] not in (1, 3, 4)):
            raise ValueError(f"{what}: a face mask must be uint8 or bool [H, W] or [H, W, 1|3|4]")
        gray = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array).convert("L")
    else:
        path = Path(path_or_array)
        what = f"mask image {path}"
        if not path.is_file():
            raise MediaError(f"no mask image at {path}; check the path")
        try:
            with Image.open(path) as im:
                gray = im.convert("L")
        except Exception as e:  # UnidentifiedImageError, truncated files
            raise MediaError(f"cannot read mask image {path}: {e}; convert it to PNG") from e
    resized = np.asarray(gray.resize((int(width), int(height)), Image.BILINEAR), np.float32) / np.float32(255.0)
    mask = (resized > 0.5).astype(np.float32)
    if not mask.any():
        raise ValueError(f"{what} has no face region at {height}x{width} (HxW): it is all black (or all below mid "
                         f"gray); paint the face area white (pixel values > 127), or give a face box instead")
    return mask


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torch's ``align_corners=False`` linear taps (float32 index arithmetic as its CPU kernel): source
    ``max((dst + 0.5) * in / out - 0.5, 0)``, indices ``i0 = floor``, ``i1 = min(i0 + 1, in - 1)``, weights."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.maximum(scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5),
                     np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (np.float32(1) - lam1).astype(np.float32), lam1


def latent_face_mask(mask: np.ndarray, latent_hw: tuple[int, int]) -> np.ndarray:
    """Pixel masks ``[H, W]`` or ``[K, H, W]`` -> float32 ``[..., h', w']`` by bilinear resizing with torch's
    ``F.interpolate(mode="bilinear", align_corners=False)`` semantics (no antialias; an 8x shrink samples pixel
    ``8 i + 3.5``, so mask edges give 0.25 / 0.5 / 0.75). Index and weight arithmetic in float32 as torch's
    kernels, taps summed along w then h (its CUDA order); torch's CPU kernel sums in another order, so results on
    non-integer ratios may differ from it by float32 rounding (a few 1e-7)."""
    m = np.asarray(mask, np.float32)
    if m.ndim not in (2, 3) or 0 in m.shape:
        raise ValueError(f"face mask must be [H, W] or [K, H, W]; got shape {m.shape}")
    out_h, out_w = (int(v) for v in latent_hw)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"latent size must be positive; got {latent_hw}")
    r0, r1, a0, a1 = _linear_taps(m.shape[-2], out_h)
    c0, c1, b0, b1 = _linear_taps(m.shape[-1], out_w)
    cols = m[..., c0] * b0 + m[..., c1] * b1   # torch's order: along w, then along h
    return (cols[..., r0, :] * a0[:, None] + cols[..., r1, :] * a1[:, None]).astype(np.float32)


def face_masks(image_hw: tuple[int, int], faces: Sequence[Face], latent_hw: tuple[int, int] | None = None, *,
               orig_hw: tuple[int, int] | None = None, area: float = FACE_AREA) -> np.ndarray:
    """Latent face masks float32 ``[K, h', w']`` of ``K`` characters on a reference image resized to
    ``image_hw``; ``latent_hw`` defaults to ``image_hw // 8``.

    Each face is ``None`` (the whole image, as the release does when it detects no face), a box ``(x, y, w, h)``
    (grown ``area`` times about its centre, ``face_box_mask``), or a mask image path / array (white = face, taken
    as is, ``mask_image``). Boxes are in the pixels of the ``orig_hw`` image the user passed (then checked there
    and mapped with ``scale_box``), or of the reference image when ``orig_hw`` is None."""
    h, w = (int(v) for v in image_hw)
    if not faces:
        raise ValueError("no faces given: pass one entry per character (None for the whole image)")
    latent_hw = (h // VAE_STRIDE, w // VAE_STRIDE) if latent_hw is None else latent_hw
    pixel_masks = []
    for k, face in enumerate(faces):
        what = f"face box of character {k + 1}"
        if face is None:
            pixel_masks.append(face_box_mask(h, w, (0, 0, w, h), area))
        elif isinstance(face, (str, os.PathLike, np.ndarray)):
            pixel_masks.append(mask_image(face, h, w))
        else:
            box = tuple(float(v) for v in face)
            if orig_hw is not None:
                check_face_box(box, orig_hw[0], orig_hw[1], what)
                box = scale_box(box, orig_hw, (h, w))
            else:
                check_face_box(box, h, w, what)
            pixel_masks.append(face_box_mask(h, w, box, area))
    return latent_face_mask(np.stack(pixel_masks), latent_hw)


def _wav_rate(path: Path) -> int | None:
    """The sample rate in a RIFF/WAVE header (its ``fmt `` chunk), or None when ``path`` is not a WAV file."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        chunk_id, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk_id == b"fmt ":
            return int.from_bytes(head[pos + 12:pos + 16], "little") if pos + 16 <= len(head) else None  # body + 4
        if chunk_id == b"data" or size == 0xFFFFFFFF:
            return None
        pos += 8 + size + (size & 1)
    return None


def avatar_audio(path: PathLike, fps: float = FPS) -> np.ndarray:
    """The driving audio as mono float32 ``[N]`` at 16 kHz (``load_audio``: channels averaged, other rates
    resampled). Raises ``MediaError`` for a WAV whose rate is below ``MIN_SAMPLE_RATE`` (or 0), for audio with
    no samples, non-finite samples, or fewer than one video frame's worth (640 samples at 25 fps)."""
    path = Path(path)
    if path.is_file():
        try:
            rate = _wav_rate(path)
        except OSError as e:
            raise MediaError(f"cannot read audio {path}: {e}; check its permissions") from e
        if rate is not None and rate < MIN_SAMPLE_RATE:
            raise MediaError(f"audio {path} has a sample rate of {rate} Hz in its WAV header; the audio models need "
                             f"speech at 16 kHz (at least {MIN_SAMPLE_RATE} Hz to resample from): re-record or "
                             f"convert it, e.g. `ffmpeg -i INPUT -ac 1 -ar 16000 -c:a pcm_s16le OUTPUT.wav`")
    samples = load_audio(path, SAMPLE_RATE)
    if not np.isfinite(samples).all():
        raise MediaError(f"audio {path} contains NaN or infinite samples; re-export it as 16-bit PCM WAV")
    if frames_of_audio(samples.shape[0], fps) < 1:
        per_frame = SAMPLE_RATE / fps
        raise MediaError(f"audio {path} is too short: {samples.shape[0]} samples ({samples.shape[0] / SAMPLE_RATE:.3f}"
                         f" s) at 16 kHz, less than one video frame ({per_frame:g} samples = {1000 / fps:g} ms at "
                         f"{fps:g} fps); give audio at least as long as the video you want")
    return samples


__all__ = ["FACE_AREA", "IMAGE_SIZE", "LLAVA_SIZE", "MIN_SAMPLE_RATE", "avatar_audio", "check_face_box",
           "face_box_mask", "face_masks", "latent_face_mask", "llava_pixels_stretched", "mask_image",
           "parse_face_box", "reference_image", "reference_size", "scale_box"]
