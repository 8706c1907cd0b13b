"""HunyuanVideo-Avatar's character image injection and extra modulation inputs (reference A.1, A.2.5).

**Character image** (``AvatarReference``, reads ``cond.ref_latents [B, T, h, w, C]``, the latents of the reference
image repeated over the window's ``T`` latent frames). It enters twice, both before the first block:

* frame for frame, ``before_proj(ref_in(ref_latents))`` is added to the video tokens (``ref_in``: a patch
  embedding of ``img_in``'s shape with its own weights; ``before_proj``: Linear ``D -> D``);
* frame 0 goes through the *shared* ``img_in`` and is prepended to the video tokens at RoPE positions
  ``(-1, h, w)`` (the released ``timecat`` rule: time -1, no spatial shift); these tokens are dropped before the
  final layer.

**Modulation** (``AvatarMotion``, reads ``cond.motion_exp [B, 4]``, ``cond.motion_pose [B, 4]``, ``cond.fps
[B]``): ``vec += motion_exp(exp) + motion_pose(pose) + fps_proj(fps)``. ``motion_exp`` / ``motion_pose`` are
timestep embedders of width ``D / 4`` applied to each of the 4 scalars (sinusoid of 256, ``mlp.0 -> SiLU ->
mlp.2``), the 4 vectors concatenated to ``D``; ``fps_proj`` is a timestep embedder of width ``D``. Missing inputs
take the official constants (30, 25, 25.0).

Params mirror the official keys ``ref_in.proj.*``, ``before_proj.*``, ``motion_exp.mlp.{0,2}.*``,
``motion_pose.mlp.{0,2}.*``, ``fps_proj.mlp.{0,2}.*``.
"""

from __future__ import annotations

import dataclasses

import einops
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from hcjax.conditioning.avatar_cond import FPS, MOTION_EXP, MOTION_POSE
from hcjax.configs import resolve_dtype
from hcjax.models.extensions import DiTContext, Extension
from hcjax.nn.embeddings import PatchEmbed, timestep_embedding, timestep_mlp
from hcjax.nn.linear import Dense
from hcjax.nn.rope import grid_positions

MOTION_SCALARS = 4


def reference_frame_positions(grid: tuple[int, int, int]) -> np.ndarray:
    """RoPE positions ``[H' W', 3]`` of the prepended reference frame: ``(-1, h, w)`` in row-major order."""
    _, h, w = grid
    return grid_positions(1, h, w, offset=(-1, 0, 0))


class _ReferenceModule(nn.Module):
    cfg: object

    @nn.compact
    def __call__(self, cond, ctx: DiTContext) -> Extension:
        cfg = self.cfg
        kw = dict(dtype=resolve_dtype(cfg.dtype), param_dtype=resolve_dtype(cfg.param_dtype))
        ref_in = PatchEmbed(cfg.hidden_size, cfg.patch_size, name="ref_in", **kw)
        before_proj = Dense(cfg.hidden_size, ("embed", "embed"), name="before_proj", **kw)
        ref = None if cond is None else cond.ref_latents
        if ref is None:
            if self.is_initializing():
                before_proj(ref_in(jnp.zeros((1, *cfg.patch_size, cfg.in_channels), jnp.float32)))
            return Extension()
        want = tuple(n * p for n, p in zip(ctx.grid, cfg.patch_size))
        if ref.ndim != 5 or tuple(ref.shape[1:4]) != want or ref.shape[-1] != cfg.in_channels:
            raise ValueError(f"ref_latents must be [B, {want[0]}, {want[1]}, {want[2]}, {cfg.in_channels}] (the "
                             "reference image's latents repeated over the video's latent frames, at its latent "
                             f"size), got {tuple(ref.shape)}")
        first = ctx.patch_embed(ref[:, :cfg.patch_size[0]])
        return Extension(token_add=before_proj(ref_in(ref)), prefix_tokens=first,
                         prefix_positions=reference_frame_positions(ctx.grid))


@dataclasses.dataclass(frozen=True)
class AvatarReference:
    """Avatar's character image injection (config entry of ``DiTConfig.mechanisms``); reads
    ``cond.ref_latents``."""

    name: str = "reference"

    def build(self, dit_cfg, name: str) -> nn.Module:
        if dit_cfg.patch_size[0] != 1:
            raise ValueError(f"the Avatar reference frame needs patch_size[0] == 1, got {dit_cfg.patch_size}")
        return _ReferenceModule(dit_cfg, name=name)


def _scalars(value, default: float, shape: tuple[int, ...], name: str) -> jnp.ndarray:
    if value is None:
        return jnp.full(shape, default, jnp.float32)
    value = jnp.asarray(value)
    if value.shape != shape:
        raise ValueError(f"{name} must be {list(shape)}, got {list(value.shape)}")
    return value.astype(jnp.float32)


class _MotionModule(nn.Module):
    cfg: object

    @nn.compact
    def __call__(self, cond, ctx: DiTContext) -> Extension:
        cfg = self.cfg
        kw = dict(dtype=resolve_dtype(cfg.dtype), param_dtype=resolve_dtype(cfg.param_dtype))
        d = cfg.hidden_size
        b = ctx.vec.shape[0]
        get = (lambda f: None) if cond is None else (lambda f: getattr(cond, f))
        exp = _scalars(get("motion_exp"), MOTION_EXP, (b, MOTION_SCALARS), "motion_exp")
        pose = _scalars(get("motion_pose"), MOTION_POSE, (b, MOTION_SCALARS), "motion_pose")
        fps = _scalars(get("fps"), FPS, (b,), "fps")

        def per_scalar(values, name):   # [B, 4] -> [B, D]: each scalar embedded to D / 4, concatenated
            emb = timestep_embedding(values.reshape(-1), timestep_mlp(d // MOTION_SCALARS, name=name, **kw))
            return einops.rearrange(emb, "(b n) e -> b (n e)", b=b)

        vec = per_scalar(exp, "motion_exp") + per_scalar(pose, "motion_pose")
        vec = vec + timestep_embedding(fps, timestep_mlp(d, name="fps_proj", **kw))
        return Extension(vec_add=vec)


@dataclasses.dataclass(frozen=True)
class AvatarMotion:
    """Avatar's motion-expression, motion-pose and fps modulation (config entry of ``DiTConfig.mechanisms``);
    reads ``cond.motion_exp``, ``cond.motion_pose``, ``cond.fps``."""

    name: str = "motion"

    def build(self, dit_cfg, name: str) -> nn.Module:
        if dit_cfg.hidden_size % MOTION_SCALARS:
            raise ValueError(f"hidden_size {dit_cfg.hidden_size} must split into {MOTION_SCALARS} motion embeddings")
        return _MotionModule(dit_cfg, name=name)
