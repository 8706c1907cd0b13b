"""Simple image measurements of demo videos: where the subject is, its colour, motion, shape and steadiness.

The demo world's subjects are saturated colours and its backgrounds low-saturation neutrals, so the subject is
the pixels of saturation above ``SATURATION`` (``subject_masks``; a frame whose saturated pixels are fewer than
``MIN_PIXELS`` or more than ``MAX_FRACTION`` of it has no subject). From those masks:

* ``colour_of``: the palette colour whose hue is nearest the subject's mean hue;
* ``direction_of``: left / right / up / down from the centroid's displacement over the clip (None if it moves
  less than ``MIN_TRAVEL`` pixels or the subject is missing in the first or last frames);
* ``shape_similarity``: IoU of two masks after moving both centroids to the origin, scaling both to unit area and
  turning one to the best of 72 angles (1 for the same shape in any pose and size); ``shape_of`` the template
  shape with the best similarity;
* ``temporal_consistency``: the mean shape similarity of consecutive frames (0 for frames without a subject).
"""

from __future__ import annotations

import functools

import numpy as np

from hcjax.demo import world

SATURATION = 0.45
MIN_PIXELS = 20           # fewer subject pixels than this in a frame: no subject
MAX_FRACTION = 0.2        # more than this share of the frame: no subject either (noise, a coloured wash)
MIN_TRAVEL = 8.0          # pixels
GRID, EXTENT = 40, 1.6    # canonical mask: GRID x GRID cells over [-EXTENT, EXTENT] in units of sqrt(area)
ANGLES = np.deg2rad(np.arange(0, 360, 5))


def subject_masks(pixels: np.ndarray) -> np.ndarray:
    """``[..., H, W, 3]`` uint8 -> bool ``[..., H, W]``: the saturated pixels, or none in a frame where they are
    too few or too many to be a subject."""
    x = pixels.astype(np.float32)
    hi, lo = x.max(-1), x.min(-1)
    masks = (hi - lo) > SATURATION * np.maximum(hi, 1.0)
    count = masks.sum((-2, -1), keepdims=True)
    return masks & (count >= MIN_PIXELS) & (count <= MAX_FRACTION * masks.shape[-1] * masks.shape[-2])


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees of ``[..., 3]`` float RGB."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.rad2deg(np.arctan2(np.sqrt(3.0) * (g - b), 2 * r - g - b)) % 360


PALETTE_HUES = {name: float(_hue(np.asarray(rgb, np.float32))) for name, rgb in world.COLOURS.items()}


def colour_of(pixels: np.ndarray, masks: np.ndarray) -> str | None:
    """The palette colour nearest in hue to the mean (unit-vector) hue of the subject pixels; None without any."""
    if masks.sum() < MIN_PIXELS:
        return None
    hues = np.deg2rad(_hue(pixels[masks].astype(np.float32)))
    mean = np.rad2deg(np.arctan2(np.sin(hues).mean(), np.cos(hues).mean())) % 360
    gap = {c: abs((mean - h + 180) % 360 - 180) for c, h in PALETTE_HUES.items()}
    return min(gap, key=gap.get)


def centroids(masks: np.ndarray) -> np.ndarray:
    """``[F, H, W]`` -> ``[F, 2]`` (y, x) centroids, NaN where a frame has no subject."""
    out = np.full((len(masks), 2), np.nan)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(ys) >= MIN_PIXELS:
            out[i] = ys.mean(), xs.mean()
    return out


def direction_of(masks: np.ndarray) -> str | None:
    """The motion direction from the centroids of the first and last quarter of the frames."""
    c = centroids(masks)
    q = max(len(c) // 4, 1)
    head, tail = c[:q][np.isfinite(c[:q, 0])], c[-q:][np.isfinite(c[-q:, 0])]
    if not len(head) or not len(tail):
        return None
    dy, dx = tail.mean(0) - head.mean(0)
    if max(abs(dy), abs(dx)) < MIN_TRAVEL:
        return None
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def _canonical(mask: np.ndarray, angle: float = 0.0) -> np.ndarray | None:
    """The mask's pixels centred, scaled to unit area, turned by ``angle`` and binned into a ``GRID`` x ``GRID``
    bool raster; None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(ys) < MIN_PIXELS:
        return None
    y, x = (ys - ys.mean()) / np.sqrt(len(ys)), (xs - xs.mean()) / np.sqrt(len(ys))
    c, s = np.cos(angle), np.sin(angle)
    y, x = c * y - s * x, s * y + c * x
    iy = np.floor((y + EXTENT) / (2 * EXTENT) * GRID).astype(int)
    ix = np.floor((x + EXTENT) / (2 * EXTENT) * GRID).astype(int)
    keep = (iy >= 0) & (iy < GRID) & (ix >= 0) & (ix < GRID)
    out = np.zeros((GRID, GRID), bool)
    out[iy[keep], ix[keep]] = True
    return out


def _turned(mask: np.ndarray) -> np.ndarray | None:
    """``[len(ANGLES), GRID, GRID]``: the canonical mask at every angle."""
    first = _canonical(mask)
    if first is None:
        return None
    return np.stack([first] + [_canonical(mask, a) for a in ANGLES[1:]])


def shape_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Best IoU over rotations of two subject masks, each centred and scaled to unit area; 0 if either is
    empty."""
    turned, fixed = _turned(a), _canonical(b)
    if turned is None or fixed is None:
        return 0.0
    inter = (turned & fixed).sum((1, 2))
    union = (turned | fixed).sum((1, 2))
    return float((inter / np.maximum(union, 1)).max())


@functools.lru_cache(maxsize=1)
def _templates() -> dict[str, np.ndarray]:
    c = world.SIZE / 2
    return {s: world.subject_cover(s, "plain", (c, c), world.RADIUS * 1.5, 0.0)[0] > 0.5 for s in world.SHAPES}


def shape_of(mask: np.ndarray) -> str | None:
    """The template shape most similar to ``mask``; None if it is empty."""
    if mask.sum() < MIN_PIXELS:
        return None
    scores = {s: shape_similarity(t, mask) for s, t in _templates().items()}
    return max(scores, key=scores.get)


def temporal_consistency(masks: np.ndarray) -> float:
    """Mean shape similarity of consecutive frames' subjects."""
    return float(np.mean([shape_similarity(a, b) for a, b in zip(masks[:-1], masks[1:])]))


METRICS = ("colour_accuracy", "direction_accuracy", "shape_accuracy", "identity_similarity", "temporal_consistency")


def score(videos: np.ndarray, scenes: list[world.Scene]) -> dict[str, float]:
    """The evaluation's numbers for ``videos [N, F, H, W, 3]`` uint8 made for ``scenes``: the share with the
    caption's colour, direction and the reference's shape (middle frame), the mean shape similarity of the
    reference's subject to every fourth frame's (identity), and the mean temporal consistency."""
    hits = {k: [] for k in METRICS}
    for video, scene in zip(videos, scenes):
        masks = subject_masks(video)
        ref = subject_masks(world.render_reference(scene))
        hits["colour_accuracy"].append(colour_of(video, masks) == scene.colour)
        hits["direction_accuracy"].append(direction_of(masks) == scene.direction)
        hits["shape_accuracy"].append(shape_of(masks[len(masks) // 2]) == scene.shape)
        hits["identity_similarity"].append(np.mean([shape_similarity(ref, m) for m in masks[::4]]))
        hits["temporal_consistency"].append(temporal_consistency(masks))
    return {k: float(np.mean(v)) for k, v in hits.items()}
