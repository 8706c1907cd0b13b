"""One optimizer step of flow-matching training, as a pure function to jit.

``step(state, batch, null_text) -> (state, metrics)``: for each of ``accum_steps`` micro-batches, draw noise
levels and noise from ``fold_in(state.rng, step)``, drop text for CFG, build the conditioning mechanisms'
``cond`` (``make_cond``, which may drop conditions too), run the DiT on the params cast to the compute dtype,
and take the gradient of the fp32 velocity MSE (plus an optional auxiliary loss on the model's sown
"predictions") with respect to the trainable params only; average, clip, AdamW, EMA. Image-to-video models
(``clean_lead``) see their clean leading frames in place of the noisy ones and are not scored on them.
Partially trainable leaves (``hcjax.training.trainable.Part``) get their gradient masked and keep their frozen
values bit for bit.
The batch's leading axis is split into micro-batches so that each device keeps its own samples (no data moves).
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any, Callable

import einops
import jax
import jax.numpy as jnp
import optax

from hcjax.configs import resolve_dtype
from hcjax.models.dit import HunyuanVideoDiT
from hcjax.training import loss as loss_lib
from hcjax.training import trainable as trainable_lib
from hcjax.training.metrics import STEP_METRICS
from hcjax.training.optimizer import OptimizerConfig
from hcjax.training.state import TrainState

CondFn = Callable[[dict, jax.Array], Any]   # (batch, key) -> the DiT's cond
# (micro-batch after text dropout, the DiT's sown "predictions", step) -> (scalar loss, {name: scalar metric})
AuxLossFn = Callable[[dict, Any, jax.Array], tuple[jax.Array, dict]]
CleanLeadFn = Callable[[dict], jax.Array]   # batch -> the clean latent frames [B, k, H, W, C] that lead each sample
PREDICTIONS = "predictions"   # the mutable collection extra output heads sow into


def _micro_batches(batch: dict, accum: int) -> dict:
    """``[B, ...] -> [accum, B / accum, ...]``; micro-batch ``j`` holds samples ``j, j + accum, ...``."""
    return {k: einops.rearrange(v, "(b a) ... -> a b ...", a=accum) for k, v in batch.items()}


def make_train_step(model: HunyuanVideoDiT, loss_cfg: loss_lib.FlowMatchingLoss, opt_cfg: OptimizerConfig,
                    tx: optax.GradientTransformation, trainable: Set[str], make_cond: CondFn | None = None,
                    aux_loss: AuxLossFn | None = None, clean_lead: CleanLeadFn | None = None
                    ) -> Callable[[TrainState, dict, dict], tuple[TrainState, dict]]:
    """The pure train step of ``model``. ``batch``: the data contract's arrays (``latents [B, T, H, W, C]``,
    ``text_states``, ``text_mask``, ``text_pooled``, and whatever ``make_cond(batch, key)`` turns into the DiT's
    ``cond``, ``key`` being the micro-batch's randomness for condition dropout); ``null_text``: the empty
    prompt's unbatched ``text_*`` arrays. ``trainable``: a ``trainable.select`` result (or a set of paths).

    ``aux_loss(batch, predictions, step) -> (loss, metrics)``, if given, is added to the micro-batch's MSE
    before differentiation; ``predictions`` is what the model's heads sowed, nested by module path as flax
    keeps it (``predictions[mechanism][name]`` is the tuple of the values sown under ``name``), ``batch``
    the micro-batch after text dropout. Its metrics, averaged over micro-batches, join the step's metrics
    (``loss`` stays the flow-matching MSE).

    ``clean_lead(batch) -> [B, k, H, W, C]``, if given (image-to-video by token replacement,
    ``training.i2v_cond``), replaces the first ``k`` latent frames of the noisy input, as the sampler does, and
    the MSE covers only the frames after them."""
    cfg = model.cfg
    compute = resolve_dtype(cfg.dtype)
    accum = opt_cfg.accum_steps

    def forward(params, batch, x_t, sigma, key, step):
        """``(velocity, aux loss or None, aux metrics)`` of one micro-batch."""
        b = x_t.shape[0]
        guidance = jnp.full((b,), loss_cfg.guidance * 1000.0, jnp.float32) if cfg.guidance_embed else None
        args = (x_t.astype(compute), sigma * 1000.0, batch["text_states"].astype(compute), batch["text_mask"],
                batch["text_pooled"].astype(compute))
        kw = dict(guidance=guidance, cond=None if make_cond is None else make_cond(batch, jax.random.fold_in(key, 1)))
        if aux_loss is None:
            return model.apply({"params": params}, *args, **kw), None, {}
        velocity, variables = model.apply({"params": params}, *args, mutable=[PREDICTIONS], **kw)
        aux, aux_metrics = aux_loss(batch, variables.get(PREDICTIONS, {}), step)
        aux = jnp.asarray(aux, jnp.float32)
        clash = set(aux_metrics) & set(STEP_METRICS)
        if clash:
            raise ValueError(f"aux_loss metrics {sorted(clash)} clash with the step's own metrics")
        return velocity, aux, aux_metrics

    def sample_loss(train, frozen, batch, key, null_text, step):
        k_sigma, k_noise, k_drop = jax.random.split(key, 3)
        x0 = batch["latents"]
        sigma = loss_lib.sample_sigmas(k_sigma, x0.shape[0], loss_cfg)
        noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
        x_t, target = loss_lib.noisy_latents(x0, noise, sigma)
        lead = 0
        if clean_lead is not None:
            x_t, lead = loss_lib.with_clean_lead(x_t, clean_lead(batch))
        batch = loss_lib.drop_text(k_drop, batch, null_text, loss_cfg.text_dropout)
        params = jax.tree.map(lambda p: p.astype(compute), trainable_lib.merge(train, frozen))
        velocity, aux, aux_metrics = forward(params, batch, x_t, sigma, key, step)
        per_sample = loss_lib.per_sample_mse(velocity[:, lead:], target[:, lead:])
        mse = jnp.mean(per_sample)
        return mse if aux is None else mse + aux, (mse, per_sample, sigma, aux_metrics)

    grad_fn = jax.value_and_grad(sample_loss, has_aux=True)

    def step(state: TrainState, batch: dict, null_text: dict) -> tuple[TrainState, dict]:
        train, frozen = trainable_lib.split(state.params, trainable)
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

        def micro(carry, xs):
            grads, sums, counts = carry
            i, mb = xs
            (_, (mse, per_sample, sigma, aux_metrics)), g = grad_fn(
                train, frozen, mb, jax.random.fold_in(key, i), null_text, state.step)
            s, c = loss_lib.bucket_sums(per_sample, sigma, loss_cfg.timestep_buckets)
            return (jax.tree.map(jnp.add, grads, g), sums + s, counts + c), (mse, aux_metrics)

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), train)
        n = loss_cfg.timestep_buckets
        init = (zeros, jnp.zeros((n,), jnp.float32), jnp.zeros((n,), jnp.float32))
        (grads, sums, counts), (losses, aux_metrics) = jax.lax.scan(
            micro, init, (jnp.arange(accum), _micro_batches(batch, accum)))
        grads = trainable_lib.mask_grads(jax.tree.map(lambda g: g / accum, grads), trainable)
        updates, opt_state = tx.update(grads, state.opt_state, train)
        new_train = trainable_lib.keep_frozen(optax.apply_updates(train, updates), train, trainable)
        ema = state.ema
        if ema is not None:
            d = opt_cfg.ema_decay
            ema = trainable_lib.keep_frozen(jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, new_train),
                                            ema, trainable)
        new_state = state.replace(step=state.step + 1, params=trainable_lib.merge(new_train, frozen),
                                  opt_state=opt_state, ema=ema)
        metrics = {"loss": jnp.mean(losses), "grad_norm": optax.tree.norm(grads),
                   "bucket_loss_sum": sums, "bucket_count": counts}
        metrics |= {k: jnp.mean(v, axis=0) for k, v in aux_metrics.items()}
        return new_state, metrics

    return step
