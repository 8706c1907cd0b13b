"""Reading and writing media: H.264 MP4 video (imageio-ffmpeg), PNG/RGB images (pillow), contact sheets.

Frames are uint8 numpy arrays ``[F, H, W, 3]`` (images ``[H, W, 3]``), RGB. Writers are atomic: they write a
hidden temporary file next to the target and ``os.replace`` it into place only once it is complete.
imageio, imageio-ffmpeg and pillow are imported lazily, so importing this module needs only numpy.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

PathLike = str | os.PathLike

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process umask once, so temp files get ordinary permissions


class MediaError(ValueError):
    """Unreadable or invalid media; the message names the path or array and the fix."""


@contextlib.contextmanager
def atomic_output(path: PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yields a hidden temp path (``.name.tmp-XXXX<suffix>``) in ``path``'s directory; on success it is moved onto
    ``path`` with ``os.replace``, on any exception it is deleted and the exception re-raised."""
    target = Path(path)
    suffix = target.suffix if suffix is None else suffix
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", suffix=suffix, dir=target.parent)
    except FileNotFoundError as e:
        raise MediaError(f"cannot write {target}: directory {target.parent} does not exist; create it first") from e
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _check_uint8(array: np.ndarray, ndim: int, what: str) -> np.ndarray:
    array = np.asarray(array)
    layout = "[F, H, W, 3]" if ndim == 4 else "[H, W, 3]"
    if array.ndim != ndim or array.shape[-1] != 3 or 0 in array.shape:
        raise MediaError(f"{what} must be a non-empty RGB array {layout}; got shape {array.shape}")
    if array.dtype != np.uint8:
        raise MediaError(f"{what} must be uint8; got {array.dtype} (convert float frames in [-1, 1] with to_uint8)")
    return np.ascontiguousarray(array)


def to_uint8(video: np.ndarray) -> np.ndarray:
    """Float frames in [-1, 1] (any float dtype, e.g. ``[F, H, W, 3]``) -> uint8 via
    ``round((clip(x, -1, 1) + 1) * 127.5)``. NaNs raise MediaError rather than becoming grey pixels."""
    video = np.asarray(video)
    if video.dtype.kind in "biu":
        raise MediaError(f"to_uint8 expects float frames in [-1, 1]; got {video.dtype} (already uint8?)")
    x = video.astype(np.float32)
    if np.isnan(x).any():
        raise MediaError("video contains NaN; the sampler or decoder diverged (try float32 or fewer steps)")
    return np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def image_to_unit_range(image_uint8: np.ndarray) -> np.ndarray:
    """uint8 image or frames -> float32 in [-1, 1] as torchvision's ``ToTensor`` + ``Normalize(0.5, 0.5)``:
    ``(x / 255 - 0.5) / 0.5`` in float32 (the reference pipelines' rounding)."""
    x = np.asarray(image_uint8, dtype=np.float32) / np.float32(255.0)
    return (x - np.float32(0.5)) / np.float32(0.5)


def write_mp4(path: PathLike, frames_uint8: np.ndarray, fps: float = 24.0, quality: int = 8) -> None:
    """Writes uint8 ``[F, H, W, 3]`` frames as H.264 (yuv420p) MP4, atomically.

    ``quality`` is imageio's 0..10 scale (libx264 CRF = int(51 * (1 - quality / 10)); 8 -> CRF 10). Frames are
    never resized (``macro_block_size=1``), so H and W must be even, as yuv420p requires.
    """
    frames = _check_uint8(frames_uint8, 4, "frames")
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise MediaError(f"H.264 yuv420p needs even frame sizes; got {h}x{w} (crop or pad to even H and W)")
    if not fps > 0:
        raise MediaError(f"fps must be positive; got {fps}")
    if not 0 <= quality <= 10:
        raise MediaError(f"quality must be in 0..10 (imageio scale); got {quality}")
    import imageio.v2 as iio

    with atomic_output(path, suffix=".mp4") as tmp, warnings.catch_warnings():
        # ffmpeg runs as a subprocess (fork + exec at once); JAX's fork warning does not apply to it
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        writer = iio.get_writer(tmp, format="FFMPEG", codec="libx264", fps=float(fps), quality=quality,
                                pixelformat="yuv420p", macro_block_size=1, ffmpeg_log_level="error")
        with writer:
            for frame in frames:
                writer.append_data(frame)


def read_video(path: PathLike) -> np.ndarray:
    """Decodes all frames of a video file to uint8 ``[F, H, W, 3]`` RGB."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"no video file at {path}; check the path")
    import imageio.v2 as iio

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            with iio.get_reader(path, format="FFMPEG") as reader:
                frames = [np.asarray(frame)[..., :3] for frame in reader]
    except Exception as e:  # imageio/ffmpeg raise assorted OSError/RuntimeError/IndexError
        raise MediaError(f"cannot decode video {path}: {e}; re-encode it with ffmpeg to H.264 MP4") from e
    if not frames:
        raise MediaError(f"video {path} has no frames; re-encode it with ffmpeg")
    return np.stack(frames).astype(np.uint8, copy=False)


def contact_sheet(frames_uint8: np.ndarray, columns: int | None = None, max_frames: int = 16,
                  gap: int = 2) -> np.ndarray:
    """Tiles up to ``max_frames`` evenly spaced frames (first and last included) in a grid, row by row, with
    ``gap`` white (255) pixels between tiles; ``columns`` defaults to ceil(sqrt(n)). Returns uint8 ``[H', W', 3]``."""
    frames = _check_uint8(frames_uint8, 4, "frames")
    if max_frames < 1 or gap < 0 or (columns is not None and columns < 1):
        raise MediaError(f"need max_frames >= 1, gap >= 0, columns >= 1; got {max_frames}, {gap}, {columns}")
    total, h, w, _ = frames.shape
    n = min(total, max_frames)
    picks = np.floor(np.linspace(0, total - 1, n) + 0.5).astype(int)
    cols = min(columns or math.ceil(math.sqrt(n)), n)
    rows = math.ceil(n / cols)
    sheet = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), 255, np.uint8)
    for k, i in enumerate(picks):
        top, left = (k // cols) * (h + gap), (k % cols) * (w + gap)
        sheet[top:top + h, left:left + w] = frames[i]
    return sheet


def write_png(path: PathLike, image_uint8: np.ndarray) -> None:
    """Writes a uint8 ``[H, W, 3]`` image as PNG (whatever ``path``'s suffix), atomically."""
    image = _check_uint8(image_uint8, 3, "image")
    from PIL import Image

    with atomic_output(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def read_image(path: PathLike) -> np.ndarray:
    """Reads any pillow-readable image as uint8 ``[H, W, 3]`` RGB (EXIF orientation is ignored)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"no image file at {path}; check the path")
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # UnidentifiedImageError, truncated files, decompression bombs
        raise MediaError(f"cannot read image {path}: {e}; convert it to PNG or JPEG") from e


def resize_center_crop(image_uint8: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scales by ``max(height / H, width / W)`` so the image covers ``height x width`` (keeping aspect ratio),
    then centre-crops to exactly that size. Resampling is pillow BILINEAR (antialiased when shrinking)."""
    image = _check_uint8(image_uint8, 3, "image")
    if height < 1 or width < 1:
        raise MediaError(f"target size must be positive; got {height}x{width}")
    h, w, _ = image.shape
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    if (new_h, new_w) != (h, w):
        from PIL import Image

        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.ascontiguousarray(image[top:top + height, left:left + width])
