"""The HunyuanVideo diffusion transformer (``HYVideoDiffusionTransformer``) in Flax.

Forward: ``vec = time_in(t) + vector_in(pooled) [+ guidance_in(g)]``; video tokens from ``img_in``; text
tokens from the token refiner ``txt_in``; 20 double-stream blocks on ``(img, txt)``; 40 single-stream blocks
on ``[img; txt]``; the image tokens through ``final_layer``; unpatchify. Params mirror the official names;
the blocks of each stack are stacked on a leading ``layers`` axis.
"""

from __future__ import annotations

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from hcjax.configs import DiTConfig, resolve_dtype
from hcjax.models.blocks import TOKENS, DoubleStreamBlock, FinalLayer, SingleStreamBlock
from hcjax.models.extensions import DiTContext, Extension, merge, segments
from hcjax.models.refiner import SingleTokenRefiner
from hcjax.nn.activations import silu
from hcjax.nn.embeddings import MLP, PatchEmbed, timestep_embedding, timestep_mlp
from hcjax.nn.modulation import ModulationVec
from hcjax.nn.rope import grid_positions, rope_tables
from hcjax.nn.stack import BlockStack


def text_segments(text_mask: jax.Array, num_image_tokens: int) -> jax.Array:
    """Segment ids ``[B, Li + Lt]`` of the reference's varlen attention: the first ``Li + sum(mask)`` tokens
    form segment 0 (image + valid text), the rest segment 1. The mask is used by count, as the reference's
    ``cu_seqlens`` does."""
    length = num_image_tokens + text_mask.shape[1]
    valid = num_image_tokens + jnp.sum(text_mask.astype(jnp.int32), axis=1)
    return (jnp.arange(length)[None, :] >= valid[:, None]).astype(jnp.int32)


class HunyuanVideoDiT(nn.Module):
    """See ``hcjax`` API.md: ``apply(params, latents, timestep, text_states, text_mask, text_pooled,
    guidance=None, cond=None) -> velocity`` with latents ``[B, T, H, W, C]`` channels-last."""

    cfg: DiTConfig

    @nn.compact
    def __call__(self, latents: jax.Array, timestep: jax.Array, text_states: jax.Array, text_mask: jax.Array,
                 text_pooled: jax.Array, guidance: jax.Array | None = None, cond=None, *,
                 step_cache: jax.Array | None = None, return_cache: bool = False):
        """``step_cache`` / ``return_cache``: HunyuanCustom's step cache (``hcjax.sampling.step_cache``).
        ``return_cache=True`` returns ``(velocity, cache)`` with ``cache [B, L_img + L_txt, D]`` the input of
        the last single block; given a ``step_cache``, the double blocks and all single blocks but the last are
        skipped and the last one runs on the cache with this call's modulation vector."""
        cfg = self.cfg
        self._check_inputs(latents, timestep, text_states, text_mask, text_pooled, guidance, cond)
        dtype, param_dtype = resolve_dtype(cfg.dtype), resolve_dtype(cfg.param_dtype)
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        d = cfg.hidden_size
        grid = tuple(n // p for n, p in zip(latents.shape[1:4], cfg.patch_size))

        time_in = timestep_mlp(d, name="time_in", **kw)
        pooled_vec = MLP(d, d, silu, ("in_layer", "out_layer"), ("pooled_embed", "embed", "embed"),
                         name="vector_in", **kw)(text_pooled)
        vec = timestep_embedding(timestep, time_in) + pooled_vec
        if cfg.guidance_embed:
            vec = vec + timestep_embedding(guidance, timestep_mlp(d, name="guidance_in", **kw))

        img_in = PatchEmbed(d, cfg.patch_size, name="img_in", **kw)
        img = img_in(latents)
        txt = SingleTokenRefiner(cfg, name="txt_in")(text_states, timestep, text_mask)

        ctx = DiTContext(grid=grid, patch_embed=img_in, timestep=timestep, vec=vec, dtype=dtype,
                         embed_timestep=lambda t: timestep_embedding(t, time_in), pooled_vec=pooled_vec)
        ext = self._extensions(cond, ctx)
        positions = jnp.asarray(grid_positions(*grid))
        if ext.vec_add is not None:
            vec = vec + ext.vec_add.astype(vec.dtype)
        if ext.token_add is not None:
            img = img + ext.token_add.astype(img.dtype)
        num_prefix = 0
        if ext.prefix_tokens is not None:
            num_prefix = ext.prefix_tokens.shape[1]
            img = jnp.concatenate([ext.prefix_tokens.astype(img.dtype), img], axis=1)
            positions = jnp.concatenate([ext.prefix_positions.astype(positions.dtype), positions], axis=0)

        num_img, num_txt = img.shape[1], txt.shape[1]
        mv = ModulationVec(vec, ext.lead_vec, start=num_prefix, stop=num_prefix + ext.lead_tokens)
        rope = rope_tables(positions, cfg.rope_axes, cfg.rope_theta, num_unrotated=num_txt)
        segment_ids = text_segments(text_mask, num_img)
        img = nn.with_logical_constraint(img, TOKENS)
        txt = nn.with_logical_constraint(txt, TOKENS)

        stack_kw = dict(scan=cfg.scan_layers, remat_policy=cfg.remat_policy)
        double = BlockStack(DoubleStreamBlock, cfg, cfg.depth_double, name="double_blocks", **stack_kw)
        single = BlockStack(SingleStreamBlock, cfg, cfg.depth_single, name="single_blocks", **stack_kw)
        last = cfg.depth_single - 1
        single_hooks = ext.single_hooks
        captured = []
        if step_cache is None:
            carry = (img, txt)
            for start, stop, hooks in segments(cfg.depth_double, ext.double_hooks):
                carry = double(carry, mv, rope, segment_ids, start=start, stop=stop)
                for hook in hooks:
                    carry = hook(carry)
            x = jnp.concatenate(carry, axis=1)
            if return_cache:
                if last == 0:
                    captured.append(x)
                else:   # a boundary before the last block, where its input is kept
                    single_hooks = single_hooks + ((last - 1, lambda y: captured.append(y) or y),)
            first = 0
        else:
            want = (img.shape[0], num_img + num_txt, cfg.hidden_size)
            if step_cache.shape != want:
                raise ValueError(f"step_cache must be [B, L_img + L_txt, D] = {want}, got {step_cache.shape}")
            x, first = step_cache.astype(img.dtype), last
        for start, stop, hooks in segments(cfg.depth_single, single_hooks):
            if stop <= first:
                continue
            x = single(x, mv, rope, segment_ids, num_img, start=max(start, first), stop=stop)
            for hook in hooks:
                x = hook(x)

        out = FinalLayer(cfg, name="final_layer")(x[:, num_prefix:num_img], vec)
        pt, ph, pw = cfg.patch_size
        t, h, w = grid
        velocity = einops.rearrange(out, "b (t h w) (c pt ph pw) -> b (t pt) (h ph) (w pw) c",
                                    t=t, h=h, w=w, pt=pt, ph=ph, pw=pw)
        return (velocity, captured[0]) if return_cache else velocity

    def _extensions(self, cond, ctx: DiTContext) -> Extension:
        exts = [mech.build(self.cfg, name=mech.name)(cond, ctx) for mech in self.cfg.mechanisms]
        return merge(exts)

    def _check_inputs(self, latents, timestep, text_states, text_mask, text_pooled, guidance, cond):
        cfg, problems = self.cfg, []
        if latents.ndim != 5 or latents.shape[-1] != cfg.in_channels:
            problems.append(f"latents must be [B, T, H, W, {cfg.in_channels}], got {latents.shape}")
        elif any(n % p for n, p in zip(latents.shape[1:4], cfg.patch_size)):
            problems.append(f"latent T, H, W {latents.shape[1:4]} must be multiples of the patch {cfg.patch_size}")
        b = latents.shape[0]
        if timestep.shape != (b,):
            problems.append(f"timestep must be [B] = [{b}], got {timestep.shape}")
        if text_states.ndim != 3 or text_states.shape[0] != b or text_states.shape[-1] != cfg.text_dim:
            problems.append(f"text_states must be [{b}, L, {cfg.text_dim}], got {text_states.shape}")
        if text_mask.shape != text_states.shape[:2]:
            problems.append(f"text_mask must be [B, L] = {text_states.shape[:2]}, got {text_mask.shape}")
        if text_pooled.shape != (b, cfg.pooled_dim):
            problems.append(f"text_pooled must be [{b}, {cfg.pooled_dim}], got {text_pooled.shape}")
        if cfg.guidance_embed and (guidance is None or guidance.shape != (b,)):
            problems.append("this model embeds guidance: pass guidance [B] (scale x 1000), got "
                            f"{None if guidance is None else guidance.shape}")
        if not cfg.guidance_embed and guidance is not None:
            problems.append("this model has no guidance embedding (guidance_embed=False): pass guidance=None")
        if cond is not None and not cfg.mechanisms:
            problems.append("this model has no conditioning mechanisms: pass cond=None")
        if problems:
            raise ValueError("HunyuanVideoDiT inputs: " + "; ".join(problems))
