"""Transformer blocks of the HunyuanVideo DiT: double-stream, single-stream and the final layer.

Param names mirror the official ``MMDoubleStreamBlock`` / ``MMSingleStreamBlock`` / ``FinalLayer``.
Numerics follow the reference's autocast: LayerNorm and modulate in fp32, matmuls and the residual stream in
the compute dtype, RMSNorm statistics and RoPE in fp32, attention softmax in fp32.
"""

from __future__ import annotations

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from hcjax.configs import DiTConfig, resolve_dtype
from hcjax.nn.activations import gelu_tanh, silu
from hcjax.nn.embeddings import MLP
from hcjax.nn.linear import Dense
from hcjax.nn.modulation import Modulation, ModulationVec, gate, modulate
from hcjax.nn.norms import RMSNorm, layer_norm
from hcjax.nn.rope import apply_rope
from hcjax.parallel.sequence import joint_attention

LN_EPS = 1e-6
TOKENS = ("activation_batch", "activation_length", "activation_embed")


def _dtypes(cfg: DiTConfig) -> dict:
    return dict(dtype=resolve_dtype(cfg.dtype), param_dtype=resolve_dtype(cfg.param_dtype))


def _split_heads(qkv: jax.Array, heads: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``[B, L, 3 * H * D]`` (rows q | k | v, each head-major) -> three head-major ``[B, H, L, D]``."""
    q, k, v = einops.rearrange(qkv, "b l (k h d) -> k b h l d", k=3, h=heads)
    return q, k, v


def _merge_heads(x: jax.Array) -> jax.Array:
    return einops.rearrange(x, "b h l d -> b l (h d)")


def _attention(cfg: DiTConfig, q, k, v, segment_ids, num_image: int) -> jax.Array:
    """Joint attention over ``[img; txt]`` (head-major), sequence-parallel as the config and the mesh say."""
    return _merge_heads(joint_attention(q, k, v, segment_ids, num_image, mode=cfg.sequence_parallel,
                                        axis=cfg.sequence_axis, impl=cfg.attention_impl))


class DoubleStreamBlock(nn.Module):
    """Image and text streams with their own weights, joined in one attention over ``[img; txt]`` (heads are
    handled head-major, ``[B, H, L, D]``, the attention kernels' layout).

    ``carry = (img [B, Li, D], txt [B, Lt, D])``; ``mv``: the ``ModulationVec`` (its token range applies to
    the image stream); ``rope = (cos, sin)`` over ``[img; txt]`` (identity on text); ``segment_ids [B, Li + Lt]``.
    """

    cfg: DiTConfig

    def setup(self):
        c, kw = self.cfg, _dtypes(self.cfg)
        d, pdt = c.hidden_size, kw["param_dtype"]
        self.img_mod = Modulation(6, **kw)
        self.img_attn_qkv = Dense(3 * d, ("embed", "qkv"), **kw)
        self.img_attn_q_norm = RMSNorm(LN_EPS, pdt)
        self.img_attn_k_norm = RMSNorm(LN_EPS, pdt)
        self.img_attn_proj = Dense(d, ("attn", "embed"), **kw)
        self.img_mlp = MLP(c.mlp_dim, d, gelu_tanh, **kw)
        self.txt_mod = Modulation(6, **kw)
        self.txt_attn_qkv = Dense(3 * d, ("embed", "qkv"), **kw)
        self.txt_attn_q_norm = RMSNorm(LN_EPS, pdt)
        self.txt_attn_k_norm = RMSNorm(LN_EPS, pdt)
        self.txt_attn_proj = Dense(d, ("attn", "embed"), **kw)
        self.txt_mlp = MLP(c.mlp_dim, d, gelu_tanh, **kw)

    def __call__(self, carry, mv: ModulationVec, rope, segment_ids):
        img, txt = carry
        img_mod = self.img_mod.per_token(mv, img.shape[1])
        txt_mod = self.txt_mod.per_token(mv, txt.shape[1], ranged=False)
        iq, ik, iv = self._qkv(img, img_mod, self.img_attn_qkv, self.img_attn_q_norm, self.img_attn_k_norm)
        tq, tk, tv = self._qkv(txt, txt_mod, self.txt_attn_qkv, self.txt_attn_q_norm, self.txt_attn_k_norm)
        cos, sin = rope
        q = apply_rope(jnp.concatenate([iq, tq], axis=2), cos, sin)
        k = apply_rope(jnp.concatenate([ik, tk], axis=2), cos, sin)
        v = jnp.concatenate([iv, tv], axis=2)
        n_img = img.shape[1]
        attn = _attention(self.cfg, q, k, v, segment_ids, n_img)
        img = self._residuals(img, attn[:, :n_img], img_mod, self.img_attn_proj, self.img_mlp)
        txt = self._residuals(txt, attn[:, n_img:], txt_mod, self.txt_attn_proj, self.txt_mlp)
        return nn.with_logical_constraint(img, TOKENS), nn.with_logical_constraint(txt, TOKENS)

    def _qkv(self, x, mod, qkv_dense, q_norm, k_norm):
        shift1, scale1 = mod[0], mod[1]
        q, k, v = _split_heads(qkv_dense(modulate(layer_norm(x, LN_EPS), shift1, scale1)), self.cfg.num_heads)
        return q_norm(q), k_norm(k), v

    @staticmethod
    def _residuals(x, attn, mod, proj, mlp):
        _, _, gate1, shift2, scale2, gate2 = mod
        x = x + gate(proj(attn), gate1)
        return x + gate(mlp(modulate(layer_norm(x, LN_EPS), shift2, scale2)), gate2)


class SingleStreamBlock(nn.Module):
    """One stream over ``[img; txt]`` with parallel attention and MLP (``linear1`` -> ``[q|k|v|mlp]``,
    ``linear2`` <- ``[attn|GELU(mlp)]``). ``carry = x [B, Li + Lt, D]`` with ``num_image = Li``; the token range
    of ``mv`` counts from the first image token."""

    cfg: DiTConfig

    def setup(self):
        c, kw = self.cfg, _dtypes(self.cfg)
        d, pdt = c.hidden_size, kw["param_dtype"]
        self.linear1 = Dense(3 * d + c.mlp_dim, ("embed", "qkv_mlp"), **kw)
        self.linear2 = Dense(d, ("attn_mlp", "embed"), **kw)
        self.q_norm = RMSNorm(LN_EPS, pdt)
        self.k_norm = RMSNorm(LN_EPS, pdt)
        self.modulation = Modulation(3, **kw)

    def __call__(self, x, mv: ModulationVec, rope, segment_ids, num_image: int):
        shift, scale, g = self.modulation.per_token(mv, x.shape[1])
        h = self.linear1(modulate(layer_norm(x, LN_EPS), shift, scale))
        d3 = 3 * self.cfg.hidden_size
        q, k, v = _split_heads(h[..., :d3], self.cfg.num_heads)
        cos, sin = rope
        q = apply_rope(self.q_norm(q), cos, sin)
        k = apply_rope(self.k_norm(k), cos, sin)
        attn = _attention(self.cfg, q, k, v, segment_ids, num_image)
        out = self.linear2(jnp.concatenate([attn, gelu_tanh(h[..., d3:])], axis=-1))
        return nn.with_logical_constraint(x + gate(out, g), TOKENS)


class FinalLayer(nn.Module):
    """``LN -> modulate(shift, scale) -> linear`` to ``patch_volume * out_channels`` values per token;
    ``linear`` and ``adaLN_modulation_1`` are zero-initialised as in the reference."""

    cfg: DiTConfig

    @nn.compact
    def __call__(self, x: jax.Array, vec: jax.Array) -> jax.Array:
        c, kw = self.cfg, _dtypes(self.cfg)
        zeros = nn.initializers.zeros
        mod = Dense(2 * c.hidden_size, ("embed", "modulation"), kernel_init=zeros, name="adaLN_modulation_1",
                    **kw)(silu(vec.astype(kw["dtype"])))
        shift, scale = jnp.split(mod, 2, axis=-1)
        out_features = c.patch_volume * c.out_channels
        return Dense(out_features, ("embed", "out_patch"), kernel_init=zeros, name="linear", **kw)(
            modulate(layer_norm(x, LN_EPS), shift, scale))
