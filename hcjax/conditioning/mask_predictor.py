"""HuMo's focus-by-predicting (paper Sec. 3; not in the released code): a small head that predicts the face
region from intermediate video tokens, trained against face masks as a soft regulariser.

The head reads the video tokens after the double blocks ``taps`` (by default the last four, after their audio
cross-attention), normalises each tap (LayerNorm without params), concatenates them, and maps every token to the
logits of its ``pt x ph x pw`` latent pixels: ``Dense(hidden) -> GELU(tanh) -> Dense(patch volume)``. Unpatchified,
the logits are ``[B, T, H, W]`` at latent size. It changes nothing in the forward: it ``sow``s the logits into the
``"predictions"`` collection (``predictions/<name>/face_mask_logits``, a one-element tuple) and returns the carry
unchanged, so inference pays for it only when asked (``mutable=["predictions"]``; otherwise XLA drops it).
Training (``training.humo_cond``) adds a size-aware BCE against the face masks, which pushes the blocks before the
taps, audio cross-attention included, to carry where the face is.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from hcjax.configs import resolve_dtype
from hcjax.models.extensions import DiTContext, Extension
from hcjax.nn.activations import gelu_tanh
from hcjax.nn.linear import Dense
from hcjax.nn.norms import layer_norm

COLLECTION = "predictions"
LOGITS = "face_mask_logits"


class MaskHead(nn.Module):
    """``[taps] x [B, L, D]`` -> ``[B, L, patch volume]`` logits (fp32)."""

    hidden: int
    patch_volume: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, taps: list[jax.Array]) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = jnp.concatenate([layer_norm(t, 1e-6).astype(self.dtype) for t in taps], axis=-1)
        x = gelu_tanh(Dense(self.hidden, ("mask_in", "mask_hidden"), name="fc1", **kw)(x))
        return Dense(self.patch_volume, ("mask_hidden", "mask_out"), name="fc2", **kw)(x).astype(jnp.float32)


class _MaskPredictorModule(nn.Module):
    mech: "HumoMaskPredictor"
    cfg: object

    @nn.compact
    def __call__(self, cond, ctx: DiTContext) -> Extension:
        m, cfg = self.mech, self.cfg
        pt, ph, pw = cfg.patch_size
        head = MaskHead(m.hidden, pt * ph * pw, resolve_dtype(cfg.dtype), resolve_dtype(cfg.param_dtype),
                        name="head")
        if self.is_initializing():
            head([jnp.zeros((1, 1, cfg.hidden_size), jnp.float32)] * len(m.taps))
        t, h, w = ctx.grid
        num_video = t * h * w
        seen: list[jax.Array] = []

        def tap(last: bool):
            def run(carry):
                seen.append(carry[0][:, -num_video:])
                if last:
                    logits = einops.rearrange(head(seen), "b (t h w) (pt ph pw) -> b (t pt) (h ph) (w pw)",
                                              t=t, h=h, w=w, pt=pt, ph=ph, pw=pw)
                    self.sow(COLLECTION, LOGITS, logits)
                return carry
            return run

        taps = sorted(m.taps)
        return Extension(double_hooks=tuple((i, tap(i == taps[-1])) for i in taps))


@dataclasses.dataclass(frozen=True)
class HumoMaskPredictor:
    """The face-mask head of focus-by-predicting (config entry of ``DiTConfig.mechanisms``); reads nothing from
    ``cond``. ``taps``: the double blocks whose output video tokens it reads (each once)."""

    name: str = "mask_predictor"
    addable: ClassVar[bool] = True    # params may be missing from ``model.init_from`` (freshly initialised)
    taps: tuple[int, ...] = (16, 17, 18, 19)
    hidden: int = 256

    def build(self, dit_cfg, name: str) -> nn.Module:
        if not self.taps or len(set(self.taps)) != len(self.taps):
            raise ValueError(f"mask predictor taps must be distinct double blocks, got {self.taps}")
        if max(self.taps) >= dit_cfg.depth_double or min(self.taps) < 0:
            raise ValueError(f"mask predictor taps {self.taps} outside the {dit_cfg.depth_double} double blocks")
        return _MaskPredictorModule(self, dit_cfg, name=name)


def predicted_mask(predictions: dict, name: str = "mask_predictor") -> jax.Array:
    """The sown logits ``[B, T, H, W]`` from a DiT's ``"predictions"`` collection (the apply's mutable output)."""
    try:
        (logits,) = predictions[name][LOGITS]
    except (KeyError, ValueError):
        raise ValueError(f"no {LOGITS} of mechanism {name!r} in the predictions: apply the DiT with "
                         "mutable=['predictions'] and a model with a HumoMaskPredictor") from None
    return logits
