"""CLIP text and vision encoders, mirroring ``transformers`` 5.23.

* ``CLIPTextModel``: HunyuanVideo's second text encoder (openai/clip-vit-large-patch14); its pooled output
  conditions the DiT. ``apply(params, input_ids [B, L], attention_mask [B, L] | None) -> (last_hidden_state
  [B, L, D], pooled [B, D])``. Causal self attention; padded keys (mask 0) are hidden as well. The pooled
  token is picked as ``transformers`` does: with ``eos_token_id == 2`` (the openai configs, written before
  transformers PR #24773) it is the *argmax of the input ids* (the first EOS, since EOS = 49407 is the highest
  id and the tokenizer pads with it); otherwise the first position whose id equals ``eos_token_id`` (position
  0 when there is none).
* ``CLIPVisionModel``: the vision tower of llava-llama-3-8b-v1_1 (CLIP ViT-L/14-336). ``apply(params,
  pixel_values [B, H, W, 3]) -> (hidden_states [N + 1, B, T, D], pooled [B, D])`` with ``T = 1 + patches``.
  ``hidden_states`` are ``transformers``' ``hidden_states`` stacked: entry 0 is the embeddings *after*
  ``pre_layrnorm``, entry ``i`` the output of layer ``i`` (the last entry is ``last_hidden_state``; no
  ``post_layernorm``). ``pooled = post_layernorm(hidden_states[-1][:, 0])`` (``pooler_output``).
(The LLaVA projector on top of the vision tower is in ``llava.py``.)

Param names mirror the ``transformers`` modules (``embeddings/token_embedding/embedding``,
``encoder/layers/self_attn/q_proj/kernel``, ...); the encoder layers are stacked on a leading ``layers`` axis.
Numerics: LayerNorm statistics in fp32, matmuls and the residual stream in the compute dtype, softmax in fp32.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from hcjax.configs import resolve_dtype
from hcjax.nn.attention import attention_head_major
from hcjax.nn.embeddings import MLP
from hcjax.nn.linear import Dense, partitioned
from hcjax.nn.norms import LayerNorm
from hcjax.nn.stack import BlockStack

ACTIVATIONS = ("quick_gelu", "gelu")
# ``transformers`` keeps the pre-#24773 pooling (argmax of the ids) for configs with this eos_token_id.
LEGACY_EOS_TOKEN_ID = 2


def quick_gelu(x: jax.Array) -> jax.Array:
    """``x * sigmoid(1.702 x)`` (CLIP's QuickGELU), in fp32, returned in the input dtype."""
    xf = x.astype(jnp.float32)
    return (xf * jax.nn.sigmoid(1.702 * xf)).astype(x.dtype)


def gelu_erf(x: jax.Array) -> jax.Array:
    """The exact (erf) GELU, ``torch.nn.GELU()``, in fp32, returned in the input dtype."""
    return jax.nn.gelu(x.astype(jnp.float32), approximate=False).astype(x.dtype)


_ACT = {"quick_gelu": quick_gelu, "gelu": gelu_erf}


def _check_common(cfg, name: str) -> None:
    problems = []
    if cfg.hidden_size % cfg.num_heads:
        problems.append(f"hidden_size {cfg.hidden_size} is not divisible by num_heads {cfg.num_heads}")
    if cfg.hidden_act not in ACTIVATIONS:
        problems.append(f"hidden_act {cfg.hidden_act!r} not in {ACTIVATIONS}")
    if cfg.num_layers < 1:
        problems.append(f"num_layers must be positive, got {cfg.num_layers}")
    try:
        resolve_dtype(cfg.dtype), resolve_dtype(cfg.param_dtype)
    except ValueError as e:
        problems.append(str(e))
    if problems:
        raise ValueError(f"invalid {name}: " + "; ".join(problems))


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """Defaults: the text model of openai/clip-vit-large-patch14 (HunyuanVideo's ``text_encoder_2``). Tests use
    fp32; the reference runs it in fp16 (``dtype = param_dtype = "float16"``)."""

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    max_positions: int = 77
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    eos_token_id: int = LEGACY_EOS_TOKEN_ID
    dtype: Any = "float32"
    param_dtype: Any = "float32"
    attention_impl: str = "auto"
    scan_layers: bool = True

    causal = True  # a class constant, not a field: CLIP text attention is always causal

    def __post_init__(self):
        _check_common(self, "CLIPTextConfig")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def replace(self, **changes) -> "CLIPTextConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_transformers(cls, hf: Any, **overrides) -> "CLIPTextConfig":
        """From a ``transformers.CLIPTextConfig`` (``overrides``: dtypes and execution choices)."""
        return cls(vocab_size=hf.vocab_size, hidden_size=hf.hidden_size, intermediate_size=hf.intermediate_size,
                   num_layers=hf.num_hidden_layers, num_heads=hf.num_attention_heads,
                   max_positions=hf.max_position_embeddings, layer_norm_eps=hf.layer_norm_eps,
                   hidden_act=hf.hidden_act, eos_token_id=hf.eos_token_id, **overrides)


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """Defaults: CLIP ViT-L/14-336, the vision tower of xtuner/llava-llama-3-8b-v1_1-transformers."""

    image_size: int = 336
    patch_size: int = 14
    num_channels: int = 3
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_layers: int = 24
    num_heads: int = 16
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    dtype: Any = "float32"
    param_dtype: Any = "float32"
    attention_impl: str = "auto"
    scan_layers: bool = True

    causal = False

    def __post_init__(self):
        _check_common(self, "CLIPVisionConfig")
        if self.image_size % self.patch_size:
            raise ValueError(f"invalid CLIPVisionConfig: image_size {self.image_size} is not a multiple of "
                             f"patch_size {self.patch_size}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_positions(self) -> int:
        return self.num_patches + 1

    def replace(self, **changes) -> "CLIPVisionConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_transformers(cls, hf: Any, **overrides) -> "CLIPVisionConfig":
        """From a ``transformers.CLIPVisionConfig`` (``overrides``: dtypes and execution choices)."""
        return cls(image_size=hf.image_size, patch_size=hf.patch_size, num_channels=hf.num_channels,
                   hidden_size=hf.hidden_size, intermediate_size=hf.intermediate_size,
                   num_layers=hf.num_hidden_layers, num_heads=hf.num_attention_heads,
                   layer_norm_eps=hf.layer_norm_eps, hidden_act=hf.hidden_act, **overrides)


def _dtypes(cfg) -> dict:
    return dict(dtype=resolve_dtype(cfg.dtype), param_dtype=resolve_dtype(cfg.param_dtype))


def _layer_norm(cfg, name: str) -> LayerNorm:
    return LayerNorm(cfg.layer_norm_eps, affine=True, param_dtype=resolve_dtype(cfg.param_dtype),
                     axis_name="embed", name=name)


class CLIPAttention(nn.Module):
    """Multi-head self attention (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``, all with bias); causal for
    the text config; ``kv_mask [B, L]`` (True = attend) hides padded keys."""

    cfg: Any

    @nn.compact
    def __call__(self, h: jax.Array, kv_mask: jax.Array | None) -> jax.Array:
        c, kw = self.cfg, _dtypes(self.cfg)
        d = c.hidden_size
        q = Dense(d, ("embed", "attn"), name="q_proj", **kw)(h)
        k = Dense(d, ("embed", "kv"), name="k_proj", **kw)(h)
        v = Dense(d, ("embed", "kv"), name="v_proj", **kw)(h)
        q, k, v = (einops.rearrange(t, "b l (h d) -> b h l d", h=c.num_heads) for t in (q, k, v))
        out = attention_head_major(q, k, v, impl=c.attention_impl, causal_block=1 if c.causal else None,
                                   kv_mask=kv_mask)
        return Dense(d, ("attn", "embed"), name="out_proj", **kw)(einops.rearrange(out, "b h l d -> b l (h d)"))


class CLIPEncoderLayer(nn.Module):
    """Pre-LN layer: ``x + attn(LN1(x))``, then ``x + fc2(act(fc1(LN2(x))))``. ``carry = x [B, L, D]``, args
    ``(kv_mask,)``."""

    cfg: Any

    def setup(self):
        c, kw = self.cfg, _dtypes(self.cfg)
        self.self_attn = CLIPAttention(c)
        self.layer_norm1 = LayerNorm(c.layer_norm_eps, affine=True, param_dtype=kw["param_dtype"],
                                     axis_name="embed")
        self.mlp = MLP(c.intermediate_size, c.hidden_size, _ACT[c.hidden_act], **kw)
        self.layer_norm2 = LayerNorm(c.layer_norm_eps, affine=True, param_dtype=kw["param_dtype"],
                                     axis_name="embed")

    def layer(self, x: jax.Array, kv_mask: jax.Array | None) -> jax.Array:
        dt = x.dtype
        x = x + self.self_attn(self.layer_norm1(x).astype(dt), kv_mask).astype(dt)
        return x + self.mlp(self.layer_norm2(x).astype(dt)).astype(dt)

    def __call__(self, x, kv_mask):
        return self.layer(x, kv_mask)


class _RecordingLayer(CLIPEncoderLayer):
    """The same layer (same params) that also writes its output into a stack of hidden states:
    ``carry = (x, states [N + 1, B, L, D], i)`` -> ``states[i + 1] = layer(x)``."""

    def __call__(self, carry, kv_mask):
        x, states, i = carry
        x = self.layer(x, kv_mask)
        return x, jax.lax.dynamic_update_index_in_dim(states, x, i + 1, 0), i + 1


class CLIPEncoder(nn.Module):
    """``encoder``: the layer stack (``encoder/layers/...``, stacked). With ``record`` it returns the stacked
    hidden states ``[stop + 1, B, L, D]`` (input first), else the last one."""

    cfg: Any
    record: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, kv_mask: jax.Array | None = None, stop: int | None = None) -> jax.Array:
        c = self.cfg
        stop = c.num_layers if stop is None else stop
        if not 0 <= stop <= c.num_layers:
            raise ValueError(f"stop {stop} outside 0..{c.num_layers}")
        block = _RecordingLayer if self.record else CLIPEncoderLayer
        layers = BlockStack(block, c, c.num_layers, scan=c.scan_layers, name="layers")
        if not self.record:
            return layers(x, kv_mask, stop=stop)
        states = jnp.zeros((stop + 1, *x.shape), x.dtype).at[0].set(x)
        _, states, _ = layers((x, states, jnp.zeros((), jnp.int32)), kv_mask, stop=stop)
        return states


def _embedding(num: int, features: int, axes: tuple[str, str], cfg, name: str, std: float = 0.02) -> nn.Embed:
    return nn.Embed(num, features, name=name, embedding_init=partitioned(nn.initializers.normal(std), axes),
                    **_dtypes(cfg))


class CLIPTextEmbeddings(nn.Module):
    cfg: CLIPTextConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        c = self.cfg
        tokens = _embedding(c.vocab_size, c.hidden_size, ("vocab", "embed"), c, "token_embedding")(input_ids)
        positions = _embedding(c.max_positions, c.hidden_size, ("position", "embed"), c, "position_embedding")(
            jnp.arange(input_ids.shape[-1]))
        return tokens + positions[None]


def pooled_token_index(input_ids: jax.Array, eos_token_id: int) -> jax.Array:
    """``[B]`` index of the pooled token, as ``transformers.CLIPTextModel``: the argmax of the ids (first
    maximum) for ``eos_token_id == 2``, else the first position holding ``eos_token_id`` (0 if none)."""
    ids = input_ids.astype(jnp.int32)
    if eos_token_id == LEGACY_EOS_TOKEN_ID:
        return jnp.argmax(ids, axis=-1)
    return jnp.argmax((ids == eos_token_id).astype(jnp.int32), axis=-1)


class CLIPTextModel(nn.Module):
    """``apply(params, input_ids [B, L], attention_mask [B, L] | None) -> (last_hidden_state [B, L, D],
    pooled [B, D])``, both after ``final_layer_norm``, in the compute dtype. ``L <= max_positions``."""

    cfg: CLIPTextConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array]:
        c = self.cfg
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [B, L], got shape {input_ids.shape}")
        if input_ids.shape[1] > c.max_positions:
            raise ValueError(f"sequence length {input_ids.shape[1]} exceeds max_positions {c.max_positions}")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {attention_mask.shape} must match input_ids {input_ids.shape}")
        dtype = resolve_dtype(c.dtype)
        x = CLIPTextEmbeddings(c, name="embeddings")(input_ids).astype(dtype)
        kv_mask = None if attention_mask is None else attention_mask.astype(bool)
        x = CLIPEncoder(c, name="encoder")(x, kv_mask)
        last = _layer_norm(c, "final_layer_norm")(x).astype(dtype)
        index = pooled_token_index(input_ids, c.eos_token_id)
        pooled = jnp.take_along_axis(last, index[:, None, None], axis=1)[:, 0]
        return last, pooled


class CLIPVisionEmbeddings(nn.Module):
    """``[B, H, W, C]`` -> ``[B, 1 + patches, D]``: CLS, then the patches in row-major order, plus positions.
    The patch conv (no bias) is a matmul of patch vectors ordered ``(ph, pw, c)`` with the Flax-layout kernel
    ``[p, p, C, D]``."""

    cfg: CLIPVisionConfig

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        c, kw = self.cfg, _dtypes(self.cfg)
        d, p = c.hidden_size, c.patch_size
        b, h, w, ch = pixel_values.shape
        if (h, w, ch) != (c.image_size, c.image_size, c.num_channels):
            raise ValueError(f"pixel_values must be [B, {c.image_size}, {c.image_size}, {c.num_channels}] "
                             f"(channels last), got {pixel_values.shape}")
        cls = self.param("class_embedding", partitioned(nn.initializers.normal(d ** -0.5), ("embed",)), (d,),
                         kw["param_dtype"])
        patches = einops.rearrange(pixel_values, "b (h ph) (w pw) c -> b (h w) (ph pw c)", ph=p, pw=p)
        patch_embeds = _PatchKernel(d, p, ch, kw["dtype"], kw["param_dtype"], name="patch_embedding")(patches)
        cls = jnp.broadcast_to(cls.astype(kw["dtype"]), (b, 1, d))
        x = jnp.concatenate([cls, patch_embeds], axis=1)
        positions = _embedding(c.num_positions, d, ("position", "embed"), c, "position_embedding")(
            jnp.arange(c.num_positions))
        return x + positions[None]


class _PatchKernel(nn.Module):
    """``patch_embedding``: the bias-free Conv2d's kernel ``[p, p, C, D]`` applied to flattened patches."""

    features: int
    patch_size: int
    channels: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, patches: jax.Array) -> jax.Array:
        p, ch, d = self.patch_size, self.channels, self.features
        kernel = self.param("kernel", partitioned(nn.initializers.normal(0.02),
                                                  ("patch_h", "patch_w", "image_channels", "embed")),
                            (p, p, ch, d), self.param_dtype)
        return jnp.matmul(patches.astype(self.dtype), kernel.reshape(-1, d).astype(self.dtype))


class CLIPVisionModel(nn.Module):
    """``apply(params, pixel_values [B, H, W, C], stop=None) -> (hidden_states [stop + 1, B, T, D], pooled)``.

    ``stop`` runs only the first ``stop`` layers (LLaVA reads layer ``N - 1``: ``stop = N - 1`` gives the same
    features without the last layer); ``pooled`` is then ``None``. Hidden states are in the compute dtype."""

    cfg: CLIPVisionConfig

    @nn.compact
    def __call__(self, pixel_values: jax.Array, stop: int | None = None
                 ) -> tuple[jax.Array, jax.Array | None]:
        c = self.cfg
        dtype = resolve_dtype(c.dtype)
        x = CLIPVisionEmbeddings(c, name="embeddings")(pixel_values)
        x = _layer_norm(c, "pre_layrnorm")(x).astype(dtype)
        states = CLIPEncoder(c, record=True, name="encoder")(x, None, stop=stop)
        post = _layer_norm(c, "post_layernorm")
        if stop is None or stop == c.num_layers:
            return states, post(states[-1][:, 0]).astype(dtype)
        if self.is_initializing():
            post(states[-1][:, 0])  # the params exist whichever layer is read out
        return states, None
