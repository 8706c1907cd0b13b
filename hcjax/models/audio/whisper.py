"""The Whisper audio encoder (the encoder half of ``transformers``' ``WhisperModel``), channels-last.

HunyuanVideo's audio paths run it in fp32 and consume *every* hidden state: HunyuanCustom and HunyuanVideo-Avatar
stack the 5 states of whisper-tiny; HuMo averages groups of the 33 states of whisper-large-v3. The list they
consumed is
``transformers`` 4.41's ``encoder_hidden_states``::

    [embeddings + positions, output of layer 1, ..., output of layer N-1, final LayerNorm(output of layer N)]

(N + 1 entries; the raw output of the last layer is not in it). ``transformers`` 5.x collects hidden states with
forward hooks on the layers (the input of layer 1 and every layer's raw output) and then, with the default
``tie_last_hidden_states=True``, replaces the last entry by ``last_hidden_state``; the result is the same list.
``WhisperEncoder`` returns that list as ``hidden_states`` and, as ``raw_hidden_states``, the embeddings and every
layer's raw output (no final norm), so either form is at hand.

Computation, as ``transformers``: ``conv1`` (k 3, pad 1) -> exact GELU -> ``conv2`` (k 3, stride 2, pad 1) ->
exact GELU, plus the ``embed_positions`` table (sinusoids, stored in checkpoints, kept as a param here); pre-LN
layers (``self_attn_layer_norm`` -> self attention with ``q/k/v/out_proj``, ``k_proj`` without bias ->
residual; ``final_layer_norm`` -> ``fc1`` -> GELU -> ``fc2`` -> residual), then ``layer_norm``. LayerNorms
(eps 1e-5) in fp32; softmax in fp32. Params mirror the ``transformers`` names, the layers stacked on a leading
``layers`` axis.

The input is a log-mel spectrogram ``[B, T_mel, n_mels]`` (channels last, i.e. ``input_features`` transposed)
with exactly ``T_mel = 2 * max_source_positions`` frames (3000 = 30 s for the released models), as
``transformers`` requires; the output has ``max_source_positions`` steps (50 Hz).
"""

from __future__ import annotations

import dataclasses
import math

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hcjax.configs import resolve_dtype
from hcjax.nn.attention import attention_head_major
from hcjax.nn.linear import Dense, partitioned
from hcjax.nn.norms import LayerNorm
from hcjax.nn.stack import BlockStack


@dataclasses.dataclass(frozen=True)
class WhisperEncoderConfig:
    """Defaults: the encoder of ``openai/whisper-tiny`` (HunyuanCustom's audio encoder), in fp32.
    ``WhisperEncoderConfig.large_v3()`` is HuMo's. Field names follow ``transformers``'
    ``WhisperConfig``; the activation is always the exact (erf) GELU, as every released Whisper."""

    num_mel_bins: int = 80
    d_model: int = 384
    encoder_layers: int = 4
    encoder_attention_heads: int = 6
    encoder_ffn_dim: int = 1536
    max_source_positions: int = 1500
    layer_norm_eps: float = 1e-5
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str = "auto"
    scan_layers: bool = True

    def __post_init__(self):
        if self.d_model % self.encoder_attention_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by {self.encoder_attention_heads} heads")
        if self.d_model % 2:
            raise ValueError(f"d_model {self.d_model} must be even (sinusoidal positions)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.encoder_attention_heads

    @property
    def num_frames(self) -> int:
        """Mel frames the encoder takes: ``2 * max_source_positions`` (the stride of ``conv2``)."""
        return 2 * self.max_source_positions

    def replace(self, **changes) -> "WhisperEncoderConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def tiny(cls, **changes) -> "WhisperEncoderConfig":
        """``openai/whisper-tiny``: 80 mels, d_model 384, 4 layers, 6 heads, ffn 1536."""
        return cls(**changes)

    @classmethod
    def large_v3(cls, **changes) -> "WhisperEncoderConfig":
        """``openai/whisper-large-v3``: 128 mels, d_model 1280, 32 layers, 20 heads, ffn 5120."""
        return cls(num_mel_bins=128, d_model=1280, encoder_layers=32, encoder_attention_heads=20,
                   encoder_ffn_dim=5120, **changes)

    @classmethod
    def from_transformers(cls, config, **changes) -> "WhisperEncoderConfig":
        """The encoder part of a ``transformers.WhisperConfig`` (or any object with its attributes)."""
        act = getattr(config, "activation_function", "gelu")
        if act != "gelu" or getattr(config, "scale_embedding", False):
            raise ValueError(f"only activation 'gelu' without embedding scaling is supported; got {act!r}, "
                             f"scale_embedding={getattr(config, 'scale_embedding', False)}")
        fields = ("num_mel_bins", "d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
                  "max_source_positions")
        return cls(**{f: getattr(config, f) for f in fields}, **changes)


WHISPER_TINY = WhisperEncoderConfig.tiny()
WHISPER_LARGE_V3 = WhisperEncoderConfig.large_v3()


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU evaluated in fp32, returned in the input dtype (``torch.nn.functional.gelu``)."""
    return jax.nn.gelu(x.astype(jnp.float32), approximate=False).astype(x.dtype)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper's position table ``[length, channels]``: sines then cosines (initialises ``embed_positions``)."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = np.exp(-increment * np.arange(channels // 2, dtype=np.float32)).astype(np.float32)
    scaled = np.arange(length, dtype=np.float32)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def _torch_uniform(fan_in: int):
    bound = fan_in ** -0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Conv1d(nn.Module):
    """``torch.nn.Conv1d`` with zero padding on ``[B, L, C]``; kernel ``[k, in, out]`` (the torch weight
    transposed) with logical names ``axes = (k_name, in_name, out_name)``. Accumulation in fp32."""

    features: int
    axes: tuple[str, str, str]
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1] * self.kernel_size
        kernel = self.param("kernel", partitioned(_torch_uniform(fan_in), self.axes),
                            (self.kernel_size, x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", partitioned(_torch_uniform(fan_in), self.axes[-1:]), (self.features,),
                          self.param_dtype)
        y = jax.lax.conv_general_dilated(x.astype(self.dtype), kernel.astype(self.dtype), (self.stride,),
                                         [(self.padding, self.padding)], dimension_numbers=("NWC", "WIO", "NWC"),
                                         preferred_element_type=jnp.float32)
        return (y + bias.astype(jnp.float32)).astype(self.dtype)


class PositionTable(nn.Module):
    """The whole ``embed_positions`` table ``embedding [positions, d_model]`` (Whisper adds every row; it is
    a fixed sinusoid table in the checkpoints, initialised to the same sinusoids here)."""

    num_positions: int
    features: int
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self) -> jax.Array:
        init = lambda key, shape, dtype: jnp.asarray(sinusoids(*shape), dtype)  # noqa: E731
        return self.param("embedding", partitioned(init, ("position", "embed")),
                          (self.num_positions, self.features), self.param_dtype)


class WhisperAttention(nn.Module):
    """Bidirectional multi-head self attention; ``k_proj`` has no bias."""

    cfg: WhisperEncoderConfig

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        c = self.cfg
        kw = dict(dtype=resolve_dtype(c.dtype), param_dtype=resolve_dtype(c.param_dtype))
        q = Dense(c.d_model, ("embed", "attn"), name="q_proj", **kw)(h)
        k = Dense(c.d_model, ("embed", "attn"), use_bias=False, name="k_proj", **kw)(h)
        v = Dense(c.d_model, ("embed", "attn"), name="v_proj", **kw)(h)
        q, k, v = (einops.rearrange(t, "b l (h d) -> b h l d", h=c.encoder_attention_heads) for t in (q, k, v))
        out = einops.rearrange(attention_head_major(q, k, v, impl=c.attention_impl), "b h l d -> b l (h d)")
        return Dense(c.d_model, ("attn", "embed"), name="out_proj", **kw)(out)


def _encoder_layer(cfg: WhisperEncoderConfig, x: jax.Array) -> jax.Array:
    """One pre-LN encoder layer; called inside the compact ``__call__`` of the module that owns its params."""
    kw = dict(dtype=resolve_dtype(cfg.dtype), param_dtype=resolve_dtype(cfg.param_dtype))
    norm = dict(eps=cfg.layer_norm_eps, affine=True, param_dtype=kw["param_dtype"], axis_name="embed")
    h = LayerNorm(**norm, name="self_attn_layer_norm")(x)
    x = x + WhisperAttention(cfg, name="self_attn")(h).astype(x.dtype)
    h = LayerNorm(**norm, name="final_layer_norm")(x)
    h = gelu(Dense(cfg.encoder_ffn_dim, ("embed", "mlp"), name="fc1", **kw)(h))
    return x + Dense(cfg.d_model, ("mlp", "embed"), name="fc2", **kw)(h).astype(x.dtype)


class WhisperEncoderLayer(nn.Module):
    """``WhisperEncoderLayer``: ``x [B, L, D] -> [B, L, D]``."""

    cfg: WhisperEncoderConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return _encoder_layer(self.cfg, x)


class _RecordingLayer(nn.Module):
    """The block of the layer stack: ``WhisperEncoderLayer``'s params and computation on the carry
    ``(x, states, index)``, writing its output to ``states[index]`` (``states`` None: nothing recorded), so
    that one scan over the stacked layers yields every layer's output."""

    cfg: WhisperEncoderConfig

    @nn.compact
    def __call__(self, carry):
        x, states, index = carry
        y = _encoder_layer(self.cfg, x)
        if states is not None:
            states = jax.lax.dynamic_update_index_in_dim(states, y.astype(states.dtype), index, axis=0)
        return y, states, index + 1


class WhisperEncoder(nn.Module):
    """``apply(params, input_features [B, 2 * max_source_positions, n_mels], output_hidden_states=True)`` ->
    ``dict``:

    * ``last_hidden_state [B, max_source_positions, d_model]``: after the final ``layer_norm`` (fp32);
    * ``hidden_states``: tuple of ``encoder_layers + 1`` arrays, ``transformers``' list (4.41 and 5.x alike):
      embeddings + positions, layers 1..N-1 raw, then ``last_hidden_state``;
    * ``raw_hidden_states``: tuple of ``encoder_layers + 1`` arrays: embeddings + positions, then the raw
      output of every layer 1..N (the last one before ``layer_norm``).

    With ``output_hidden_states=False`` the two tuples are ``None`` (nothing is recorded)."""

    cfg: WhisperEncoderConfig

    @nn.compact
    def __call__(self, input_features: jax.Array, output_hidden_states: bool = True) -> dict:
        c = self.cfg
        dtype, param_dtype = resolve_dtype(c.dtype), resolve_dtype(c.param_dtype)
        if input_features.ndim != 3 or input_features.shape[1:] != (c.num_frames, c.num_mel_bins):
            raise ValueError(f"Whisper expects log-mel features [B, {c.num_frames}, {c.num_mel_bins}] (channels "
                             f"last, padded to {c.num_frames} frames); got {input_features.shape}")
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        x = gelu(Conv1d(c.d_model, ("conv_k", "mel", "embed"), name="conv1", **kw)(input_features))
        x = gelu(Conv1d(c.d_model, ("conv_k", "embed", "embed"), stride=2, name="conv2", **kw)(x))
        x = x + PositionTable(c.max_source_positions, c.d_model, param_dtype, name="embed_positions")().astype(dtype)

        states = None
        if output_hidden_states:
            states = jnp.zeros((c.encoder_layers + 1, *x.shape), x.dtype).at[0].set(x)
        carry = (x, states, jnp.ones((), jnp.int32))
        x, states, _ = BlockStack(_RecordingLayer, c, c.encoder_layers, c.scan_layers, name="layers")(carry)
        last = LayerNorm(c.layer_norm_eps, affine=True, param_dtype=param_dtype, axis_name="embed",
                         name="layer_norm")(x)
        if states is None:
            return dict(last_hidden_state=last, hidden_states=None, raw_hidden_states=None)
        raw = tuple(states[i] for i in range(c.encoder_layers + 1))
        return dict(last_hidden_state=last, hidden_states=raw[:-1] + (last,), raw_hidden_states=raw)


def example_features(cfg: WhisperEncoderConfig, batch: int = 1) -> jax.Array:
    """Zero log-mel features of the one accepted shape, for init and shape tracing."""
    return jnp.zeros((batch, cfg.num_frames, cfg.num_mel_bins), jnp.float32)
