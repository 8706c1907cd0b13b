"""Tiled VAE encode and decode with linear overlap blending, as the reference runs them at inference.

A clip is cut into overlapping temporal chunks, each chunk (if large) into overlapping spatial tiles; every
tile runs through the model alone (GroupNorm statistics are per tile, as in the reference). Tiles are then
blended sequentially, each with its already-blended upper and left neighbours, then the previous chunk with
the first output frame of each later chunk dropped (it was computed as a causal "first frame"), cropped to
the stride and concatenated. Tiles of equal shape run in one ``lax.map``: one compiled copy of the model per
tile shape, one tile in memory at a time.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from hcjax.configs import VAETiling

TileFn = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class _Geometry:
    """Tiles in input units (``tile``, ``stride``, ``frames`` incl. the causal first frame, ``frame_stride``);
    blending and kept extents in output units; ``scale`` maps input to output sizes."""

    tile: int
    stride: int
    blend: int
    keep: int
    frames: int
    frame_stride: int
    frame_blend: int
    frame_keep: int
    frame_trigger: int
    out_size: Callable[[int], int]
    out_frames: Callable[[int], int]


def _decode_geometry(t: VAETiling, s: int, r: int) -> _Geometry:
    return _Geometry(t.tile_size // s, t.tile_stride // s, t.tile_size - t.tile_stride, t.tile_stride,
                     t.tile_frames // r + 1, t.tile_frame_stride // r, t.tile_frames - t.tile_frame_stride,
                     t.tile_frame_stride, t.tile_frames // r, lambda n: n * s, lambda n: (n - 1) * r + 1)


def _encode_geometry(t: VAETiling, s: int, r: int) -> _Geometry:
    return _Geometry(t.tile_size, t.tile_stride, (t.tile_size - t.tile_stride) // s, t.tile_stride // s,
                     t.tile_frames + 1, t.tile_frame_stride, (t.tile_frames - t.tile_frame_stride) // r,
                     t.tile_frame_stride // r, t.tile_frames, lambda n: n // s, lambda n: (n - 1) // r + 1)


def decode(fn: TileFn, latents: jax.Array, tiling: VAETiling, spatial_ratio: int, temporal_ratio: int) -> jax.Array:
    """``fn`` (latents -> pixels, untiled) over tiles of ``latents [B, T, h, w, C]``."""
    return _run(fn, latents, tiling, _decode_geometry(tiling, spatial_ratio, temporal_ratio))


def encode(fn: TileFn, video: jax.Array, tiling: VAETiling, spatial_ratio: int, temporal_ratio: int) -> jax.Array:
    """``fn`` (pixels -> moments, untiled) over tiles of ``video [B, F, H, W, 3]``."""
    return _run(fn, video, tiling, _encode_geometry(tiling, spatial_ratio, temporal_ratio))


def _run(fn: TileFn, x: jax.Array, tiling: VAETiling, g: _Geometry) -> jax.Array:
    length = x.shape[1]
    if tiling.temporal and length > g.frame_trigger:
        chunks = [x[:, i:i + g.frames] for i in range(0, length, g.frame_stride)]
    else:
        chunks = [x]
    grids = [_spatial_tiles(c, g) if tiling.spatial else [[c]] for c in chunks]
    outputs = iter(map_by_shape(fn, [tile for grid in grids for row in grid for tile in row]))
    results = []
    for grid, chunk in zip(grids, chunks):
        out_grid = [[next(outputs) for _ in row] for row in grid]
        if len(out_grid) == 1 and len(out_grid[0]) == 1:
            results.append(out_grid[0][0])
        else:
            results.append(_combine_spatial(out_grid, g, g.out_size(chunk.shape[2]), g.out_size(chunk.shape[3])))
    if len(results) == 1:
        return results[0]
    return _combine_temporal(results, g, g.out_frames(length))


def _spatial_tiles(x: jax.Array, g: _Geometry) -> list[list[jax.Array]]:
    h, w = x.shape[2], x.shape[3]
    if h <= g.tile and w <= g.tile:
        return [[x]]
    return [[x[:, :, i:i + g.tile, j:j + g.tile] for j in range(0, w, g.stride)] for i in range(0, h, g.stride)]


def map_by_shape(fn: TileFn, tiles: list[jax.Array]) -> list[jax.Array]:
    """``[fn(t) for t in tiles]``, with the tiles of each shape stacked and run by one ``lax.map``."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, tile in enumerate(tiles):
        groups[tile.shape].append(index)
    out: list = [None] * len(tiles)
    for indices in groups.values():
        if len(indices) == 1:
            out[indices[0]] = fn(tiles[indices[0]])
            continue
        results = jax.lax.map(fn, jnp.stack([tiles[i] for i in indices]))
        for n, i in enumerate(indices):
            out[i] = results[n]
    return out


def blend(a: jax.Array, b: jax.Array, extent: int, axis: int) -> jax.Array:
    """``b`` with its first ``e`` slices along ``axis`` replaced by ``a[-e + x] (1 - x/e) + b[x] (x/e)``,
    ``e = min(extent, len(a), len(b))`` (weights rounded to ``b``'s dtype, as the reference's scalars are)."""
    e = min(a.shape[axis], b.shape[axis], extent)
    if e == 0:
        return b
    ramp = np.arange(e, dtype=np.float64) / e
    shape = [1] * b.ndim
    shape[axis] = e
    w_a = jnp.asarray((1.0 - ramp).reshape(shape), b.dtype)
    w_b = jnp.asarray(ramp.reshape(shape), b.dtype)
    n_a, n_b = a.shape[axis], b.shape[axis]
    head = (jax.lax.slice_in_dim(a, n_a - e, n_a, axis=axis) * w_a
            + jax.lax.slice_in_dim(b, 0, e, axis=axis) * w_b)
    return jnp.concatenate([head, jax.lax.slice_in_dim(b, e, n_b, axis=axis)], axis=axis)


def _combine_spatial(grid: list[list[jax.Array]], g: _Geometry, out_h: int, out_w: int) -> jax.Array:
    done: list[list[jax.Array]] = []
    for i, row in enumerate(grid):
        new_row: list[jax.Array] = []
        for j, tile in enumerate(row):
            if i > 0:
                tile = blend(done[i - 1][j], tile, g.blend, axis=2)
            if j > 0:
                tile = blend(new_row[j - 1], tile, g.blend, axis=3)
            new_row.append(tile)
        done.append(new_row)
    rows = [jnp.concatenate([t[:, :, :g.keep, :g.keep] for t in row], axis=3) for row in done]
    return jnp.concatenate(rows, axis=2)[:, :, :out_h, :out_w]


def _combine_temporal(chunks: list[jax.Array], g: _Geometry, out_frames: int) -> jax.Array:
    done = [chunks[0]]
    for chunk in chunks[1:]:
        done.append(blend(done[-1], chunk[:, 1:], g.frame_blend, axis=1))
    kept = [done[0][:, :g.frame_keep + 1]] + [c[:, :g.frame_keep] for c in done[1:]]
    return jnp.concatenate(kept, axis=1)[:, :out_frames]
