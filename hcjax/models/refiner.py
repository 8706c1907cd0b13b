"""The SingleTokenRefiner that projects LLM text states into the DiT (``txt_in``).

Masking is the reference's: the pooled context is the masked mean of the raw text states, and in self
attention a valid token attends to valid tokens plus token 0, while a padded token attends to token 0 only
(``M[i, j] = mask[i] & mask[j]``, column 0 forced on). The mask is used positionally, so HunyuanCustom's
non-contiguous masks behave as in the reference.
"""

from __future__ import annotations

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from hcjax.configs import DiTConfig, resolve_dtype
from hcjax.nn.activations import silu
from hcjax.nn.attention import attention
from hcjax.nn.embeddings import MLP, timestep_embedding, timestep_mlp
from hcjax.nn.linear import Dense
from hcjax.nn.modulation import gate
from hcjax.nn.norms import LayerNorm
from hcjax.nn.stack import BlockStack

LN_EPS = 1e-6


def refiner_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, impl: str) -> jax.Array:
    """Attention under the refiner's mask, through the segment-id entry point.

    Key 0 joins the valid tokens' segment, so valid queries see valid keys and key 0; a padded query's only
    key is token 0, so its output is exactly ``v[:, 0]``.
    """
    valid = mask.astype(bool)
    segments = jnp.where(valid, 0, 1).at[:, 0].set(0)
    out = attention(q, k, v, segments, impl=impl)
    return jnp.where(valid[:, :, None, None], out, v[:, :1])


class RefinerBlock(nn.Module):
    """IndividualTokenRefinerBlock: gated self-attention and SiLU MLP, gates from ``c``; no qk-norm, no RoPE.
    ``carry = x [B, L, D]``, ``args = (c [B, D], mask [B, L])``."""

    cfg: DiTConfig

    @nn.compact
    def __call__(self, x, c, mask):
        cfg = self.cfg
        kw = dict(dtype=resolve_dtype(cfg.dtype), param_dtype=resolve_dtype(cfg.param_dtype))
        d = cfg.hidden_size
        mods = Dense(2 * d, ("embed", "modulation"), kernel_init=nn.initializers.zeros,
                     name="adaLN_modulation_1", **kw)(silu(c))
        gate_msa, gate_mlp = jnp.split(mods, 2, axis=-1)
        h = LayerNorm(LN_EPS, affine=True, param_dtype=kw["param_dtype"], name="norm1")(x)
        qkv = Dense(3 * d, ("embed", "qkv"), name="self_attn_qkv", **kw)(h)
        q, k, v = einops.rearrange(qkv, "b l (k h d) -> k b l h d", k=3, h=cfg.num_heads)
        attn = einops.rearrange(refiner_attention(q, k, v, mask, cfg.attention_impl), "b l h d -> b l (h d)")
        x = x + gate(Dense(d, ("attn", "embed"), name="self_attn_proj", **kw)(attn), gate_msa)
        h = LayerNorm(LN_EPS, affine=True, param_dtype=kw["param_dtype"], name="norm2")(x)
        return x + gate(MLP(cfg.mlp_dim, d, silu, name="mlp", **kw)(h), gate_mlp)


class IndividualTokenRefiner(nn.Module):
    cfg: DiTConfig

    @nn.compact
    def __call__(self, x, c, mask):
        return BlockStack(RefinerBlock, self.cfg, self.cfg.refiner_depth, self.cfg.scan_layers,
                          name="blocks")(x, c, mask)


class SingleTokenRefiner(nn.Module):
    """``txt_in``: text states ``[B, L, text_dim]``, raw timestep ``[B]``, mask ``[B, L]`` -> ``[B, L, D]``."""

    cfg: DiTConfig

    @nn.compact
    def __call__(self, text_states: jax.Array, timestep: jax.Array, mask: jax.Array) -> jax.Array:
        cfg = self.cfg
        kw = dict(dtype=resolve_dtype(cfg.dtype), param_dtype=resolve_dtype(cfg.param_dtype))
        d = cfg.hidden_size
        t_emb = timestep_embedding(timestep, timestep_mlp(d, name="t_embedder", **kw))
        maskf = mask.astype(jnp.float32)[..., None]
        context = jnp.sum(text_states.astype(jnp.float32) * maskf, axis=1) / jnp.sum(maskf, axis=1)
        c_emb = MLP(d, d, silu, ("linear_1", "linear_2"), ("text_embed", "embed", "embed"), name="c_embedder",
                    **kw)(context)
        c = t_emb + c_emb
        x = Dense(d, ("text_embed", "embed"), name="input_embedder", **kw)(text_states)
        return IndividualTokenRefiner(cfg, name="individual_token_refiner")(x, c, mask)
