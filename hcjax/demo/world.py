"""The procedural world of the bundled demo model: a coloured, textured shape moving over a plain background.

A ``Scene`` is a few choices (colour, shape, texture, direction, background, pose, start point, loudness curve);
the path crosses the frame's middle in the caption's direction.
``render_video`` draws its 17 frames at 128x128, ``render_reference`` the subject alone on white in another pose
(HunyuanCustom's reference image), ``render_audio`` a tone whose loudness sets the subject's size frame by frame,
and ``caption`` names the subject, colour, texture, motion and background. Everything is a pure function of the
scene, and ``scenes(split, n, seed)`` draws scenes from a seed, so a dataset is reproduced exactly.

Subject colours are saturated and backgrounds are low-saturation neutrals, so the subject is the saturated pixels
(``hcjax.demo.measure``). The ``held_out`` colour x shape x direction combinations never appear in training.
"""

from __future__ import annotations

import dataclasses
import numpy as np

FRAMES, SIZE, FPS = 17, 128, 10
SAMPLE_RATE = 16_000
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 230), "yellow": (235, 205, 30),
           "purple": (150, 60, 210), "cyan": (30, 195, 210)}
SHAPES = ("circle", "square", "triangle", "star")
TEXTURES = ("plain", "striped")
DIRECTIONS = {"left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0), "down": (1.0, 0.0)}   # (dy, dx)
BACKGROUNDS = {"white": ((236, 236, 236), (236, 236, 236)), "grey": ((128, 128, 128), (128, 128, 128)),
               "dark": ((28, 28, 36), (28, 28, 36)), "sand": ((214, 198, 166), (190, 174, 142)),
               "checkered": ((170, 170, 170), (110, 110, 110))}
TRAVEL = 56.0          # pixels the subject moves over the clip
JITTER = 8.0           # the path crosses the frame's middle, shifted by up to this many pixels either way
RADIUS = 17.0          # the subject's radius at mean loudness
LOUDNESS_SIZE = 0.35   # size = RADIUS * (1 + LOUDNESS_SIZE * (loudness - 0.5))
SUPERSAMPLE = 2
GRAIN = 3.0            # std of the backgrounds' static grey grain, in levels (keeps no region exactly flat)


@dataclasses.dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    texture: str
    direction: str
    background: str
    angle: float             # the subject's rotation in the video, degrees
    ref_angle: float         # its rotation in the reference image
    start: tuple[float, float]   # (y, x) of the centre in the first frame
    loudness: tuple[float, ...]  # per frame, in [0, 1]
    grain: int = 0               # seed of the background's grain

    @property
    def combination(self) -> tuple[str, str, str]:
        return self.colour, self.shape, self.direction


def held_out(colour: str, shape: str, direction: str) -> bool:
    """The colour x shape x direction combinations kept out of training: 16 of 96, each colour-shape pair losing at
    most one direction, so every pair is still seen in training."""
    c, s, d = list(COLOURS).index(colour), SHAPES.index(shape), list(DIRECTIONS).index(direction)
    return (c + 2 * s + d) % 6 == 0


def combinations(split: str) -> list[tuple[str, str, str]]:
    """The colour x shape x direction triples of ``split`` ("train" or "held_out")."""
    if split not in ("train", "held_out"):
        raise ValueError(f"split {split!r}: use train or held_out")
    return [(c, s, d) for c in COLOURS for s in SHAPES for d in DIRECTIONS if held_out(c, s, d) == (split == "held_out")]


def _loudness(rng: np.random.Generator) -> tuple[float, ...]:
    """A smooth random loudness curve: two slow sinusoids, mapped into [0.05, 0.95]."""
    t = np.arange(FRAMES) / FRAMES
    curve = sum(rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * (rng.uniform(0.5, 1.5) * k * t + rng.uniform()))
                for k in (1, 2))
    curve = (curve - curve.min()) / max(float(np.ptp(curve)), 1e-6)
    return tuple(float(v) for v in 0.05 + 0.9 * curve)


def random_scene(rng: np.random.Generator, combination: tuple[str, str, str]) -> Scene:
    """A scene of ``combination`` with the other choices drawn from ``rng``. The path is set by the direction: it
    crosses the middle of the frame, centred, up to ``JITTER`` pixels off along and across it (a caption names the
    whole motion, so a model can draw it from the caption alone)."""
    colour, shape, direction = combination
    dy, dx = DIRECTIONS[direction]
    along = SIZE / 2 - TRAVEL / 2 + rng.uniform(-JITTER, JITTER)    # the start, on the side the subject leaves
    across = SIZE / 2 + rng.uniform(-JITTER, JITTER)
    if dx:
        start = (across, along if dx > 0 else SIZE - along)
    else:
        start = (along if dy > 0 else SIZE - along, across)
    return Scene(colour, shape, str(rng.choice(TEXTURES)), direction, str(rng.choice(list(BACKGROUNDS))),
                 float(rng.uniform(0, 360)), float(rng.uniform(0, 360)), (float(start[0]), float(start[1])),
                 _loudness(rng), int(rng.integers(2 ** 31)))


def scenes(split: str, n: int, seed: int) -> list[Scene]:
    """``n`` scenes of ``split``, combinations cycled in order (balanced) and everything else drawn from
    ``seed``."""
    combos = combinations(split)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    order = [combos[i] for i in rng.permutation(len(combos))]
    return [random_scene(rng, order[i % len(order)]) for i in range(n)]


def caption(scene: Scene) -> str:
    texture = "" if scene.texture == "plain" else f"{scene.texture} "
    return f"a {scene.colour} {texture}{scene.shape} moving {scene.direction} on a {scene.background} background"


def _polygon(shape: str) -> np.ndarray | None:
    """Vertices (unit radius, angle 0) of the polygon shapes; None for the circle."""
    if shape == "circle":
        return None
    if shape == "square":
        a = np.deg2rad(45 + 90 * np.arange(4))
        return np.stack([np.sin(a), np.cos(a)], -1) * 1.12
    if shape == "triangle":
        a = np.deg2rad(90 + 120 * np.arange(3))
        return np.stack([np.sin(a), np.cos(a)], -1) * 1.3
    if shape == "star":
        a = np.deg2rad(90 + 36 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.45, 0.6)
        return np.stack([np.sin(a) * r, np.cos(a) * r], -1)
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def _inside(py: np.ndarray, px: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule: which points lie inside the polygon."""
    inside = np.zeros(py.shape, bool)
    n = len(vertices)
    for i in range(n):
        (y0, x0), (y1, x1) = vertices[i], vertices[(i + 1) % n]
        crosses = (y0 > py) != (y1 > py)
        x_at = x0 + (py - y0) * (x1 - x0) / np.where(y1 == y0, 1e-9, y1 - y0)
        inside ^= crosses & (px < x_at)
    return inside


def subject_cover(shape: str, texture: str, centre: tuple[float, float], radius: float, angle: float,
                  size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``(coverage [size, size] in [0, 1], stripe [size, size] bool)``: the antialiased subject and, for the striped
    texture, which pixels fall on a stripe (stripes turn with the subject)."""
    n = size * SUPERSAMPLE
    grid = (np.arange(n) + 0.5) / SUPERSAMPLE
    y, x = np.meshgrid(grid - centre[0], grid - centre[1], indexing="ij")
    t = np.deg2rad(angle)
    uy, ux = (np.cos(t) * y - np.sin(t) * x) / radius, (np.sin(t) * y + np.cos(t) * x) / radius
    vertices = _polygon(shape)
    hit = uy ** 2 + ux ** 2 < 1.0 if vertices is None else _inside(uy, ux, vertices)
    stripe = np.floor(ux * 2.5) % 2 == 0 if texture == "striped" else np.zeros_like(hit)
    cover = hit.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean((1, 3))
    stripes = (hit & stripe).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean((1, 3))
    return cover, stripes


def _background(name: str, grain: int, size: int = SIZE) -> np.ndarray:
    """The named background with a static grey grain (the same value on R, G and B, so it stays unsaturated)."""
    a, b = (np.asarray(c, np.float32) for c in BACKGROUNDS[name])
    y, x = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    if name == "checkered":
        pick = ((y // 16 + x // 16) % 2)[..., None]
    else:   # a vertical gradient from a (top) to b (bottom)
        pick = (y / (size - 1))[..., None]
    noise = np.random.default_rng(grain).normal(0.0, GRAIN, (size, size, 1)).astype(np.float32)
    return a * (1 - pick) + b * pick + noise


def _paint(canvas: np.ndarray, colour: str, cover: np.ndarray, stripes: np.ndarray) -> np.ndarray:
    base = np.asarray(COLOURS[colour], np.float32)
    dark = base * 0.55
    solid = cover - stripes
    return canvas * (1 - cover[..., None]) + base * solid[..., None] + dark * stripes[..., None]


def radius_at(scene: Scene, frame: int) -> float:
    return RADIUS * (1 + LOUDNESS_SIZE * (scene.loudness[frame] - 0.5))


def centre_at(scene: Scene, frame: int) -> tuple[float, float]:
    dy, dx = DIRECTIONS[scene.direction]
    step = TRAVEL * frame / (FRAMES - 1)
    return scene.start[0] + dy * step, scene.start[1] + dx * step


def render_video(scene: Scene, frames: range = range(FRAMES)) -> np.ndarray:
    """``[len(frames), SIZE, SIZE, 3]`` uint8 (default: all ``FRAMES``)."""
    background = _background(scene.background, scene.grain)
    out = []
    for f in frames:
        cover, stripes = subject_cover(scene.shape, scene.texture, centre_at(scene, f), radius_at(scene, f),
                                       scene.angle)
        out.append(_paint(background, scene.colour, cover, stripes))
    return np.clip(np.rint(np.stack(out)), 0, 255).astype(np.uint8)


def render_reference(scene: Scene) -> np.ndarray:
    """``[SIZE, SIZE, 3]`` uint8: the subject alone, centred on white, at its mean size and ``ref_angle``."""
    white = np.full((SIZE, SIZE, 3), 255.0, np.float32)
    cover, stripes = subject_cover(scene.shape, scene.texture, (SIZE / 2, SIZE / 2), RADIUS * 1.2, scene.ref_angle)
    return np.clip(np.rint(_paint(white, scene.colour, cover, stripes)), 0, 255).astype(np.uint8)


def render_audio(scene: Scene) -> np.ndarray:
    """Mono float32 at 16 kHz covering the clip: a 330 Hz tone whose amplitude is the frame's loudness (times
    0.8) during each frame."""
    per = SAMPLE_RATE // FPS
    t = np.arange(FRAMES * per) / SAMPLE_RATE
    amplitude = np.repeat(np.asarray(scene.loudness, np.float32), per)
    return (0.8 * amplitude * np.sin(2 * np.pi * 330.0 * t)).astype(np.float32)


def loudness_of_audio(audio: np.ndarray) -> np.ndarray:
    """Per-frame loudness back from ``render_audio``'s samples (peak amplitude / 0.8), ``[FRAMES]``."""
    per = SAMPLE_RATE // FPS
    frames = np.abs(audio[: FRAMES * per]).reshape(FRAMES, per).max(1)
    return frames / 0.8


def vocabulary() -> list[str]:
    """Every word a caption can hold."""
    words = {"a", "moving", "on", "background", *COLOURS, *SHAPES, *TEXTURES, *DIRECTIONS, *BACKGROUNDS}
    return sorted(words)
