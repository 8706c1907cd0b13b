"""The Llama-3 decoder as a text encoder (the language part of llava-llama-3-8b, HunyuanVideo's MLLM).

The reference takes ``hidden_states[-3]``: the output of decoder layer ``N - 2`` of ``N``, before the final
norm. ``LlamaEncoder(..., output_layer=k)`` runs only the first ``k`` layers and returns their output
(``None``: all layers and the final norm, the ``last_hidden_state``). Params mirror ``transformers``'
``LlamaModel`` (``embed_tokens``, ``layers/{self_attn,mlp,input_layernorm,post_attention_layernorm}``,
``norm``), the layers stacked on a leading axis. Numerics as ``transformers``: RMSNorm statistics in fp32,
half-split RoPE with ``theta^(-2i/d)`` frequencies in fp32 and the rotation in the compute dtype, grouped
key/value heads, causal attention over the valid (mask = 1) keys.
"""

from __future__ import annotations

import dataclasses

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hcjax.configs import resolve_dtype
from hcjax.nn.attention import attention_head_major
from hcjax.nn.linear import Dense, partitioned
from hcjax.nn.norms import RMSNorm
from hcjax.nn.stack import BlockStack


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Defaults: the text part of xtuner/llava-llama-3-8b-v1_1-transformers (fp16, as the reference runs it)."""

    vocab_size: int = 128320
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 8
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    dtype: str = "float16"
    param_dtype: str = "float16"
    attention_impl: str = "auto"
    scan_layers: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def replace(self, **changes) -> "LlamaConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_transformers(cls, hf, **overrides) -> "LlamaConfig":
        """From a ``transformers.LlamaConfig`` (``overrides``: dtypes and execution choices)."""
        params = getattr(hf, "rope_parameters", None) or {}
        scaling = getattr(hf, "rope_scaling", None) or {}
        if params.get("rope_type", "default") != "default" or scaling.get("rope_type", "default") != "default":
            raise ValueError("only the default RoPE (Llama-3.0, as llava-llama-3-8b) is supported")
        theta = params.get("rope_theta", getattr(hf, "rope_theta", 500000.0))
        return cls(vocab_size=hf.vocab_size, hidden_size=hf.hidden_size, intermediate_size=hf.intermediate_size,
                   num_layers=hf.num_hidden_layers, num_heads=hf.num_attention_heads,
                   num_kv_heads=hf.num_key_value_heads, rms_norm_eps=hf.rms_norm_eps, rope_theta=theta,
                   **overrides)


def rope_cos_sin(position_ids: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """``(cos, sin) [B, L, head_dim]`` in fp32 for integer positions ``[B, L]`` (``freqs`` duplicated over
    the two halves, as ``transformers``' default RoPE)."""
    inv_freq = 1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
    freqs = position_ids.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq.astype(np.float32))
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def _rotate_half_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """``x * cos + rotate_half(x) * sin`` on head-major ``x [B, H, L, D]`` in x's dtype."""
    cos, sin = cos[:, None].astype(x.dtype), sin[:, None].astype(x.dtype)
    x1, x2 = jnp.split(x, 2, axis=-1)
    return x * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


class LlamaLayer(nn.Module):
    """One decoder layer; ``carry = x [B, L, D]``, args ``(cos, sin, kv_mask)``."""

    cfg: LlamaConfig

    @nn.compact
    def __call__(self, x, cos, sin, kv_mask):
        c = self.cfg
        norm = dict(eps=c.rms_norm_eps, param_dtype=resolve_dtype(c.param_dtype), axis_name="embed")
        h = RMSNorm(**norm, name="input_layernorm")(x)
        x = x + _SelfAttention(c, name="self_attn")(h, cos, sin, kv_mask)
        h = RMSNorm(**norm, name="post_attention_layernorm")(x)
        return x + _MLP(c, name="mlp")(h)


class _SelfAttention(nn.Module):
    cfg: LlamaConfig

    @nn.compact
    def __call__(self, h, cos, sin, kv_mask):
        c = self.cfg
        kw = dict(dtype=resolve_dtype(c.dtype), param_dtype=resolve_dtype(c.param_dtype), use_bias=False)
        d_kv = c.num_kv_heads * c.head_dim
        q = Dense(c.num_heads * c.head_dim, ("embed", "attn"), name="q_proj", **kw)(h)
        k = Dense(d_kv, ("embed", "kv"), name="k_proj", **kw)(h)
        v = Dense(d_kv, ("embed", "kv"), name="v_proj", **kw)(h)
        q = einops.rearrange(q, "b l (h d) -> b h l d", h=c.num_heads)
        k, v = (einops.repeat(t, "b l (g d) -> b (g r) l d", g=c.num_kv_heads, r=c.num_heads // c.num_kv_heads)
                for t in (k, v))
        q, k = _rotate_half_rope(q, cos, sin), _rotate_half_rope(k, cos, sin)
        out = attention_head_major(q, k, v, impl=c.attention_impl, causal_block=1, kv_mask=kv_mask)
        out = einops.rearrange(out, "b h l d -> b l (h d)")
        return Dense(c.hidden_size, ("attn", "embed"), name="o_proj", **kw)(out)


class _MLP(nn.Module):
    cfg: LlamaConfig

    @nn.compact
    def __call__(self, h):
        c = self.cfg
        kw = dict(dtype=resolve_dtype(c.dtype), param_dtype=resolve_dtype(c.param_dtype), use_bias=False)
        gate = Dense(c.intermediate_size, ("embed", "mlp"), name="gate_proj", **kw)(h)
        up = Dense(c.intermediate_size, ("embed", "mlp"), name="up_proj", **kw)(h)
        return Dense(c.hidden_size, ("mlp", "embed"), name="down_proj", **kw)(jax.nn.silu(gate) * up)


class LlamaEncoder(nn.Module):
    """``apply(params, input_ids [B, L], attention_mask [B, L], position_ids=None, inputs_embeds=None,
    output_layer=None) -> [B, L, D]``. ``inputs_embeds`` replaces the token lookup (LLaVA's merged
    sequence); ``position_ids`` default to ``0..L-1`` as ``transformers`` uses with right padding."""

    cfg: LlamaConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array | None, attention_mask: jax.Array, position_ids: jax.Array | None = None,
                 inputs_embeds: jax.Array | None = None, output_layer: int | None = None) -> jax.Array:
        c = self.cfg
        dtype, param_dtype = resolve_dtype(c.dtype), resolve_dtype(c.param_dtype)
        embed = nn.Embed(c.vocab_size, c.hidden_size, dtype=dtype, param_dtype=param_dtype, name="embed_tokens",
                         embedding_init=partitioned(nn.initializers.normal(0.02), ("vocab", "embed")))
        x = embed(input_ids) if inputs_embeds is None else inputs_embeds.astype(dtype)
        b, length = x.shape[:2]
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(length), (b, length))
        cos, sin = rope_cos_sin(position_ids, c.head_dim, c.rope_theta)
        stop = c.num_layers if output_layer is None else output_layer
        if not 0 <= stop <= c.num_layers:
            raise ValueError(f"output_layer {output_layer} outside 0..{c.num_layers}")
        layers = BlockStack(LlamaLayer, c, c.num_layers, scan=c.scan_layers, name="layers")
        x = layers(x, cos, sin, attention_mask.astype(bool), stop=stop)
        norm = RMSNorm(c.rms_norm_eps, param_dtype, axis_name="embed", name="norm")
        if output_layer is None:
            return norm(x)
        if self.is_initializing():
            norm(x)   # the params exist whichever layer is read out
        return x
