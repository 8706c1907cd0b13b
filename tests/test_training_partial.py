"""Partially trainable leaves (``trainable.SELF_ATTENTION`` trains only the attention columns / rows of the single
blocks' fused ``linear1`` / ``linear2``) and auxiliary losses on the DiT's sown "predictions"."""

from __future__ import annotations

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from hcjax import configs
from hcjax.models import HunyuanVideoDiT, abstract_params, random_params
from hcjax.models.extensions import Extension
from hcjax.training import loss as loss_lib
from hcjax.training import optimizer, state as state_lib, trainable
from hcjax.training.step import make_train_step

CFG = configs.get("tiny").dit.replace(dtype="float32", param_dtype="float32")
D = CFG.hidden_size


def _batch(seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    batch = {"latents": rng.standard_normal((2, 2, 4, 6, 16), np.float32),
             "text_states": rng.standard_normal((2, 3, CFG.text_dim), np.float32),
             "text_mask": np.ones((2, 3), np.int32),
             "text_pooled": rng.standard_normal((2, CFG.pooled_dim), np.float32)}
    null = {k: np.zeros(v.shape[1:], v.dtype) for k, v in batch.items() if k != "latents"}
    return batch, null


def _flat(tree) -> dict[str, np.ndarray]:
    return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}


# --- selection ---------------------------------------------------------------------------------------------------

def test_parts_resolve_from_param_shapes():
    params = abstract_params(CFG)
    chosen = trainable.select(params, trainable.SELF_ATTENTION)
    assert isinstance(chosen, trainable.Trainable) and "single_blocks/linear1/kernel" in chosen
    assert len(chosen) == len(set(chosen)) and "single_blocks/modulation/linear/kernel" not in chosen
    assert dict(chosen.parts) == {"single_blocks/linear1/kernel": trainable.Part(-1, 0, 3 * D),
                                  "single_blocks/linear1/bias": trainable.Part(-1, 0, 3 * D),
                                  "single_blocks/linear2/kernel": trainable.Part(-2, 0, D)}
    assert chosen.part("single_blocks/linear2/bias") is None   # shared output bias: whole
    # a whole match wins over a part; explicit hidden size; plain sets still work with split
    assert not trainable.select(params, ("single_blocks/linear1/*@qkv", "single_blocks/*")).parts
    assert trainable.select(params, ("single_blocks/linear1/kernel@qkv",), hidden_size=8).parts[0][1].stop == 24
    train, frozen = trainable.split(params, set(chosen))
    assert "linear1" in train["single_blocks"] and "modulation" in frozen["single_blocks"]


def test_bad_parts_are_named(monkeypatch):
    params = abstract_params(CFG)
    with pytest.raises(ValueError, match="unknown part 'mlp'"):
        trainable.select(params, ("single_blocks/linear1/*@mlp",))
    with pytest.raises(ValueError, match="q_norm/scale: part 'qkv' applies to a kernel or bias"):
        trainable.select(params, ("single_blocks/q_norm/*@qkv",))
    with pytest.raises(ValueError, match=r"linear1/kernel: part 'attn_out' needs a kernel \[..., D \+ mlp, D = 64\]"):
        trainable.select(params, ("single_blocks/linear1/kernel@attn_out",))
    monkeypatch.setitem(trainable.PARTS, "first", lambda leaf, shape, d: trainable.Part(-1, 0, 1))
    with pytest.raises(ValueError, match="two different parts"):
        trainable.select(params, ("single_blocks/linear1/kernel@qkv", "single_blocks/linear1/kernel@first"))
    with pytest.raises(ValueError, match="match no param"):
        trainable.select(params, ("nothing/*@qkv",))


def test_part_mask():
    mask = trainable.Part(-2, 0, 2).mask((3, 4, 5))
    chex.assert_shape(mask, (4, 1))
    np.testing.assert_array_equal(np.broadcast_to(mask, (3, 4, 5))[0, :, 0], [True, True, False, False])


# --- a step with SELF_ATTENTION ----------------------------------------------------------------------------------

def _is_attention(name: str) -> bool:
    return (name.startswith("double_blocks/") and "_attn_" in name) or name in (
        "single_blocks/q_norm/scale", "single_blocks/k_norm/scale", "single_blocks/linear2/bias")


def _regions(name: str, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(trained part, frozen part)`` of leaf ``name`` under SELF_ATTENTION (None: no such part)."""
    if name.startswith("single_blocks/linear1/"):
        return x[..., :3 * D], x[..., 3 * D:]
    if name == "single_blocks/linear2/kernel":
        return x[..., :D, :], x[..., D:, :]
    return (x, None) if _is_attention(name) else (None, x)


@pytest.fixture(scope="module")
def attention_step():
    """``(chosen, state before, state after, metrics)`` of one AdamW (weight decay) + EMA step."""
    params = random_params(CFG, seed=0)
    opt = optimizer.OptimizerConfig(learning_rate=1e-2, weight_decay=0.1, ema_decay=0.5, clip_norm=1e3)
    tx = optimizer.make_optimizer(opt, 10)
    chosen = trainable.select(params, trainable.SELF_ATTENTION)
    state = state_lib.create(params, tx, chosen, seed=0, ema=True)
    step = jax.jit(make_train_step(HunyuanVideoDiT(CFG), loss_lib.FlowMatchingLoss(), opt, tx, chosen))
    batch, null = _batch()
    new, metrics = step(state, batch, null)
    return chosen, state, new, metrics


def test_self_attention_step_changes_exactly_the_attention(attention_step):
    _, old, new, metrics = attention_step
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    before, after = _flat(old.params), _flat(new.params)
    for name in before:
        chex.assert_equal_shape([before[name], after[name]])
        (t0, f0), (t1, f1) = _regions(name, before[name]), _regions(name, after[name])
        if f0 is not None:
            np.testing.assert_array_equal(f1, f0, err_msg=f"frozen part of {name} changed")
        if t0 is not None:
            assert np.all(t1 != t0), f"trained part of {name} did not change everywhere"


def test_self_attention_ema_and_moments_follow_the_parts(attention_step):
    chosen, old, new, metrics = attention_step
    start, ema = _flat(old.params), _flat(new.ema)
    assert set(ema) == set(chosen)
    mu = _flat(optax.tree_utils.tree_get(new.opt_state, "mu"))
    assert set(mu) == set(chosen)
    for name in ema:
        (t0, f0), (t1, f1) = _regions(name, start[name]), _regions(name, ema[name])
        (m_train, m_frozen) = _regions(name, mu[name])
        assert np.any(t1 != t0) and np.any(m_train != 0), name   # a real gradient reached the part
        if f0 is not None:
            np.testing.assert_array_equal(f1, f0, err_msg=f"EMA of the frozen part of {name} moved")
            assert not np.any(m_frozen), f"{name} got a gradient outside its part"
    # no clipping at this norm, so Adam's first moment is (1 - b1) g: grad_norm is the norm of the masked grads
    norm = np.sqrt(sum(np.sum(np.square(m)) for m in mu.values())) / 0.1
    np.testing.assert_allclose(float(metrics["grad_norm"]), norm, rtol=1e-4)


def test_a_run_with_an_ema_exports_the_ema(attention_step):
    """``final_params``: the EMA in the trained parts, the params elsewhere; the params themselves without an EMA."""
    chosen, _, new, _ = attention_step
    final, params, ema = (_flat(t) for t in (state_lib.final_params(new, chosen), new.params, new.ema))
    assert set(final) == set(params)
    for name in params:
        chex.assert_equal_shape([final[name], params[name]])
        if name not in ema:
            np.testing.assert_array_equal(final[name], params[name])
            continue
        (t_final, f_final), (t_ema, _), (t_params, f_params) = (_regions(name, t[name]) for t in (final, ema, params))
        np.testing.assert_array_equal(t_final, t_ema)
        assert np.any(t_final != t_params), name     # decay 0.5: the EMA lags the params
        if f_final is not None:
            np.testing.assert_array_equal(f_final, f_params)
    assert state_lib.final_params(new.replace(ema=None), chosen) is new.params


# --- auxiliary losses on sown predictions ------------------------------------------------------------------------

class _Head(nn.Module):
    """A test-only output head: after double block 0, sows ``img @ w [B, L]`` as "predictions" / "head" /
    "scores"."""

    cfg: configs.DiTConfig

    @nn.compact
    def __call__(self, cond, ctx):
        w = self.param("w", nn.initializers.normal(0.1), (self.cfg.hidden_size,))
        if cond is None:
            return Extension()

        def hook(carry):
            img, _ = carry
            self.sow("predictions", "scores", jnp.einsum("bld,d->bl", img, w.astype(img.dtype)))
            return carry

        return Extension(double_hooks=((0, hook),))


@dataclasses.dataclass(frozen=True)
class _HeadMechanism:
    name: str = "head"

    def build(self, dit_cfg, name):
        return _Head(dit_cfg, name=name)


def _head_loss(batch, predictions, step):
    """``aux_weight * mean((scores - 1)^2)``; the weight is a batch key, so one compiled step runs with and
    without the aux term."""
    (scores,) = predictions["head"]["scores"]   # nested by module path; sown values are tuples
    chex.assert_shape(scores, (1, 12))   # a micro-batch of one sample, 2 x 2 x 3 video tokens
    loss = jnp.mean(jnp.square(scores - 1.0))
    return jnp.mean(batch["aux_weight"]) * loss, {
        "head_loss": loss, "latent_mean": jnp.mean(batch["latents"]), "aux_step": step * 1.0,
        "face": jnp.mean(batch["face_mask"])}


def test_aux_loss_trains_the_head_and_reports_its_metrics():
    cfg = CFG.replace(mechanisms=(_HeadMechanism(),), depth_double=1, depth_single=1)   # compile time
    params = random_params(cfg, seed=0)
    opt = optimizer.OptimizerConfig(learning_rate=1e-2, accum_steps=2)
    tx = optimizer.make_optimizer(opt, 10)
    chosen = trainable.select(params, trainable.ALL)
    state = state_lib.create(params, tx, chosen, seed=0).replace(step=jnp.asarray(3, jnp.int32))
    batch, null = _batch()
    batch["face_mask"] = np.array([[0.0, 1.0], [1.0, 1.0]], np.float32)
    make_cond = lambda b, k: {}   # noqa: E731   the mechanism runs whenever cond is not None
    step = jax.jit(make_train_step(HunyuanVideoDiT(cfg), loss_lib.FlowMatchingLoss(), opt, tx, chosen,
                                   make_cond=make_cond, aux_loss=_head_loss))
    new_off, m_off = step(state, batch | {"aux_weight": np.zeros((2,), np.float32)}, null)
    new_on, m_on = step(state, batch | {"aux_weight": np.ones((2,), np.float32)}, null)

    assert set(m_on) == {"loss", "grad_norm", "bucket_loss_sum", "bucket_count", "head_loss", "latent_mean",
                         "aux_step", "face"}
    chex.assert_rank([m_on["head_loss"], m_on["aux_step"]], 0)
    np.testing.assert_allclose(float(m_on["loss"]), float(m_off["loss"]), rtol=1e-6)   # "loss": the MSE only
    np.testing.assert_allclose(float(m_on["head_loss"]), float(m_off["head_loss"]), rtol=1e-6)
    assert float(m_on["head_loss"]) > 0 and float(m_on["aux_step"]) == 3.0
    # averaged over the two micro-batches (of one sample each): the batch means
    np.testing.assert_allclose(float(m_on["latent_mean"]), batch["latents"].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(m_on["face"]), 0.75, rtol=1e-6)
    # the head's param gets a gradient only from the aux term; the total gradient changes with it
    np.testing.assert_array_equal(new_off.params["head"]["w"], params["head"]["w"])
    assert np.all(np.asarray(new_on.params["head"]["w"]) != params["head"]["w"])
    assert float(m_on["grad_norm"]) != float(m_off["grad_norm"])
