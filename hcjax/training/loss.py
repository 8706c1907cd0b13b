"""The flow-matching objective of HunyuanVideo: ``x_s = (1 - s) x0 + s eps``, the model predicts the velocity
``eps - x0`` at timestep ``s * 1000``; mean squared error in fp32.

Noise levels ``s`` are drawn logit-normal (``sigmoid(N(mean, std))``, SD3's choice) or uniform, then optionally
shifted like the sampler's schedule (``shift * s / (1 + (shift - 1) s)``; > 1 spends more steps at high noise).
Conditioning dropout replaces a sample's text with the empty prompt's embedding so that the model also learns
the unconditional velocity classifier-free guidance needs.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

TIMESTEP_SAMPLINGS = ("logit_normal", "uniform")
TEXT_KEYS = ("text_states", "text_mask", "text_pooled")


@dataclasses.dataclass(frozen=True)
class FlowMatchingLoss:
    timestep_sampling: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0
    text_dropout: float = 0.0       # probability of training a sample unconditionally (empty prompt)
    guidance: float = 1.0           # embedded-guidance scale fed to guidance-distilled models (x 1000 inside)
    timestep_buckets: int = 4       # loss is also reported per noise-level bucket [i/n, (i+1)/n)

    def __post_init__(self):
        problems = []
        if self.timestep_sampling not in TIMESTEP_SAMPLINGS:
            problems.append(f"timestep_sampling {self.timestep_sampling!r} not in {TIMESTEP_SAMPLINGS}")
        if self.shift <= 0:
            problems.append(f"shift must be > 0, got {self.shift}")
        if not 0 <= self.text_dropout <= 1:
            problems.append(f"text_dropout must be in [0, 1], got {self.text_dropout}")
        if self.logit_std <= 0:
            problems.append(f"logit_std must be > 0, got {self.logit_std}")
        if self.timestep_buckets < 1:
            problems.append(f"timestep_buckets must be >= 1, got {self.timestep_buckets}")
        if problems:
            raise ValueError("invalid loss settings: " + "; ".join(problems))


def sample_sigmas(rng: jax.Array, batch: int, loss: FlowMatchingLoss) -> jax.Array:
    """Noise levels ``[batch]`` in (0, 1), fp32."""
    if loss.timestep_sampling == "logit_normal":
        u = jax.nn.sigmoid(loss.logit_mean + loss.logit_std * jax.random.normal(rng, (batch,), jnp.float32))
    else:
        u = jax.random.uniform(rng, (batch,), jnp.float32)
    return loss.shift * u / (1.0 + (loss.shift - 1.0) * u)


def noisy_latents(x0: jax.Array, noise: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(x_sigma, target velocity)`` in fp32."""
    s = sigma.reshape((-1,) + (1,) * (x0.ndim - 1))
    x0, noise = x0.astype(jnp.float32), noise.astype(jnp.float32)
    return (1.0 - s) * x0 + s * noise, noise - x0


def with_clean_lead(x_t: jax.Array, lead: jax.Array) -> tuple[jax.Array, int]:
    """``(x_t, k)`` with the first ``k`` latent frames of ``x_t`` replaced by the clean ``lead [B, k, H, W, C]``:
    the image-to-video input, whose first frame is never noised."""
    k = lead.shape[1]
    if lead.shape[:1] + lead.shape[2:] != x_t.shape[:1] + x_t.shape[2:] or not 0 < k < x_t.shape[1]:
        raise ValueError(f"clean leading frames {lead.shape} do not lead latents {x_t.shape}: they need the "
                         "latents' batch, height, width and channels and fewer frames")
    return jnp.concatenate([lead.astype(x_t.dtype), x_t[:, k:]], axis=1), k


def drop_text(rng: jax.Array, batch: dict, null_text: dict, probability: float) -> dict:
    """``batch`` with each sample's text replaced by ``null_text`` (unbatched ``TEXT_KEYS``) with ``probability``."""
    if probability == 0:
        return batch
    b = batch["latents"].shape[0]
    drop = jax.random.bernoulli(rng, probability, (b,))
    out = dict(batch)
    for key in TEXT_KEYS:
        x = batch[key]
        keep = drop.reshape((-1,) + (1,) * (x.ndim - 1))
        out[key] = jnp.where(keep, null_text[key][None].astype(x.dtype), x)
    return out


def per_sample_mse(velocity: jax.Array, target: jax.Array) -> jax.Array:
    """``[B]`` mean squared error of each sample, fp32."""
    err = jnp.square(velocity.astype(jnp.float32) - target)
    return jnp.mean(err.reshape(err.shape[0], -1), axis=1)


def bucket_sums(values: jax.Array, sigma: jax.Array, buckets: int) -> tuple[jax.Array, jax.Array]:
    """Per noise-level bucket: ``(sum of values [n], count [n])``; summing these over steps and hosts and
    dividing gives the mean loss of each bucket."""
    index = jnp.clip(jnp.floor(sigma * buckets).astype(jnp.int32), 0, buckets - 1)
    one_hot = jax.nn.one_hot(index, buckets, dtype=jnp.float32)
    return one_hot.T @ values.astype(jnp.float32), jnp.sum(one_hot, axis=0)
