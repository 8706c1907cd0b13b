"""One optimizer step of VAE training, as a pure function to jit: the HunyuanVideo report's reconstruction + KL
objective (its perceptual and adversarial terms need networks whose weights are not available here; they are
left out).

``loss = l1 * |x - D(z)| + l2 * (x - D(z))^2 + kl * KL(q(z|x) || N(0, 1))`` with ``z`` a posterior sample, every
term summed over a sample's elements (pixels, latent elements) and averaged over the batch: the latent-diffusion
convention the report's KL weight of 1e-6 refers to. The loss is then divided by the pixels per sample (a constant:
the same optimum, readable magnitudes), so ``l1`` and ``l2`` read as per-pixel means and the KL enters per pixel.
Averaging the reconstruction per pixel but not the KL would weigh the KL tens of thousands of times more than
intended; with Adam that inflates the posterior variance until the decoder sees mostly noise. Videos arrive as uint8
and are mapped to [-1, 1].
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from hcjax.models.vae import CausalVAE
from hcjax.training.state import TrainState


@dataclasses.dataclass(frozen=True)
class VAELoss:
    """The experiment config's ``vae_loss`` section: the weights of the three terms."""

    l1: float = 1.0
    l2: float = 0.0
    kl: float = 1e-6
    init_logvar: float = -6.0   # a fresh VAE's posterior log-variance (``initial_logvar``)

    def __post_init__(self):
        bad = [f"vae_loss.{k} must be >= 0, got {getattr(self, k)}" for k in ("l1", "l2", "kl") if getattr(self, k) < 0]
        if bad or self.l1 + self.l2 == 0:
            raise ValueError("; ".join(bad) or "vae_loss: l1 and l2 are both 0; give a reconstruction weight")


def initial_logvar(params: dict, value: float) -> dict:
    """Fresh VAE params whose posterior log-variance starts at ``value``: the log-variance half of ``quant_conv``'s
    bias set to it. With the default initialisation the posterior std starts near 1 and, at the report's KL weight,
    shrinks only by the learning rate per step, so for thousands of steps the decoder would see mostly noise."""
    bias = params["quant_conv"]["bias"]
    c = bias.shape[0] // 2
    new = jnp.concatenate([bias[:c], jnp.full((c,), value, bias.dtype)])
    return {**params, "quant_conv": {**params["quant_conv"], "bias": new}}


def to_unit_range(video: jax.Array) -> jax.Array:
    return video.astype(jnp.float32) / 127.5 - 1.0


def vae_losses(vae: CausalVAE, params, video: jax.Array, key: jax.Array, cfg: VAELoss) -> tuple[jax.Array, dict]:
    """``(weighted loss, {"loss", "l1", "l2", "kl"})`` of a ``[B, F, H, W, 3]`` batch in [-1, 1]; ``l1`` and ``l2``
    are per-pixel means, ``kl`` the KL summed over one sample's latent elements."""
    posterior = vae.apply({"params": params}, video, method=CausalVAE.encode_distribution)
    recon = vae.apply({"params": params}, posterior.sample(key), method=CausalVAE.decode_untiled)
    err = recon.astype(jnp.float32) - video
    l1, l2 = jnp.mean(jnp.abs(err)), jnp.mean(err ** 2)
    kl_elems = 0.5 * (posterior.mean ** 2 + jnp.exp(posterior.logvar) - 1.0 - posterior.logvar)
    kl = jnp.sum(kl_elems) / video.shape[0]
    pixels = video[0].size
    loss = cfg.l1 * l1 + cfg.l2 * l2 + cfg.kl * kl / pixels
    return loss, {"loss": loss, "l1": l1, "l2": l2, "kl": kl}


def make_vae_step(vae: CausalVAE, cfg: VAELoss, tx: optax.GradientTransformation
                  ) -> Callable[[TrainState, dict, dict], tuple[TrainState, dict]]:
    """``step(state, batch, unused) -> (state, metrics)``; ``batch["video"]`` is ``[B, F, H, W, 3]`` uint8. The
    third argument keeps the DiT step's signature (``ShardedStep``); it is ignored."""

    def step(state: TrainState, batch: dict, _unused: dict) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        video = to_unit_range(batch["video"])
        (_, metrics), grads = jax.value_and_grad(lambda p: vae_losses(vae, p, video, key, cfg), has_aux=True)(
            state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state)
        return new, metrics | {"grad_norm": optax.tree.norm(grads)}

    return step
