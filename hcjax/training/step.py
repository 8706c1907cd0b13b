"""One optimizer step of flow-matching training, as a pure function to jit.

``step(state, batch, null_text) -> (state, metrics)``: for each of ``accum_steps`` micro-batches, draw noise
levels and noise from ``fold_in(state.rng, step)``, drop text for CFG, build the conditioning mechanisms'
``cond`` (``make_cond``, which may drop conditions too), run the DiT on the params cast to the compute dtype,
and take the gradient of the fp32 velocity MSE with respect to the trainable params only; average, clip, AdamW,
EMA. The batch's leading axis is split into micro-batches so that each device keeps its
own samples (no data moves).
"""

from __future__ import annotations

from typing import Any, Callable

import einops
import jax
import jax.numpy as jnp
import optax

from hcjax.configs import resolve_dtype
from hcjax.models.dit import HunyuanVideoDiT
from hcjax.training import loss as loss_lib
from hcjax.training import trainable as trainable_lib
from hcjax.training.optimizer import OptimizerConfig
from hcjax.training.state import TrainState

CondFn = Callable[[dict, jax.Array], Any]   # (batch, key) -> the DiT's cond


def _micro_batches(batch: dict, accum: int) -> dict:
    """``[B, ...] -> [accum, B / accum, ...]``; micro-batch ``j`` holds samples ``j, j + accum, ...``."""
    return {k: einops.rearrange(v, "(b a) ... -> a b ...", a=accum) for k, v in batch.items()}


def make_train_step(model: HunyuanVideoDiT, loss_cfg: loss_lib.FlowMatchingLoss, opt_cfg: OptimizerConfig,
                    tx: optax.GradientTransformation, trainable: set[str], make_cond: CondFn | None = None
                    ) -> Callable[[TrainState, dict, dict], tuple[TrainState, dict]]:
    """The pure train step of ``model``. ``batch``: the data contract's arrays (``latents [B, T, H, W, C]``,
    ``text_states``, ``text_mask``, ``text_pooled``, and whatever ``make_cond(batch, key)`` turns into the DiT's
    ``cond``, ``key`` being the micro-batch's randomness for condition dropout); ``null_text``: the empty
    prompt's unbatched ``text_*`` arrays."""
    cfg = model.cfg
    compute = resolve_dtype(cfg.dtype)
    accum = opt_cfg.accum_steps

    def sample_loss(train, frozen, batch, key, null_text):
        k_sigma, k_noise, k_drop = jax.random.split(key, 3)
        x0 = batch["latents"]
        b = x0.shape[0]
        sigma = loss_lib.sample_sigmas(k_sigma, b, loss_cfg)
        noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
        x_t, target = loss_lib.noisy_latents(x0, noise, sigma)
        batch = loss_lib.drop_text(k_drop, batch, null_text, loss_cfg.text_dropout)
        params = jax.tree.map(lambda p: p.astype(compute), trainable_lib.merge(train, frozen))
        guidance = jnp.full((b,), loss_cfg.guidance * 1000.0, jnp.float32) if cfg.guidance_embed else None
        velocity = model.apply({"params": params}, x_t.astype(compute), sigma * 1000.0,
                               batch["text_states"].astype(compute), batch["text_mask"],
                               batch["text_pooled"].astype(compute), guidance=guidance,
                               cond=None if make_cond is None else make_cond(batch, jax.random.fold_in(key, 1)))
        per_sample = loss_lib.per_sample_mse(velocity, target)
        return jnp.mean(per_sample), (per_sample, sigma)

    grad_fn = jax.value_and_grad(sample_loss, has_aux=True)
    def step(state: TrainState, batch: dict, null_text: dict) -> tuple[TrainState, dict]:
        train, frozen = trainable_lib.split(state.params, trainable)
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

        def micro(carry, xs):
            grads, sums, counts = carry
            i, mb = xs
            (loss, (per_sample, sigma)), g = grad_fn(train, frozen, mb, jax.random.fold_in(key, i), null_text)
            s, c = loss_lib.bucket_sums(per_sample, sigma, loss_cfg.timestep_buckets)
            return (jax.tree.map(jnp.add, grads, g), sums + s, counts + c), loss

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), train)
        n = loss_cfg.timestep_buckets
        init = (zeros, jnp.zeros((n,), jnp.float32), jnp.zeros((n,), jnp.float32))
        (grads, sums, counts), losses = jax.lax.scan(micro, init, (jnp.arange(accum), _micro_batches(batch, accum)))
        grads = jax.tree.map(lambda g: g / accum, grads)
        updates, opt_state = tx.update(grads, state.opt_state, train)
        new_train = optax.apply_updates(train, updates)
        ema = state.ema
        if ema is not None:
            d = opt_cfg.ema_decay
            ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, new_train)
        new_state = state.replace(step=state.step + 1, params=trainable_lib.merge(new_train, frozen),
                                  opt_state=opt_state, ema=ema)
        metrics = {"loss": jnp.mean(losses), "grad_norm": optax.tree.norm(grads),
                   "bucket_loss_sum": sums, "bucket_count": counts}
        return new_state, metrics

    return step
