"""The pieces of the train step: noise levels, the flow-matching target, text dropout, per-bucket losses,
the learning-rate schedule, trainable-param selection, and logical-name shardings."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax import configs
from hcjax.models import HunyuanVideoDiT, abstract_params, random_params
from hcjax.parallel.shardings import logical_to_mesh
from hcjax.training import loss as loss_lib
from hcjax.training import optimizer, state as state_lib, trainable
from hcjax.training.step import make_train_step


def test_logit_normal_sigmas_and_shift():
    key = jax.random.key(0)
    plain = loss_lib.sample_sigmas(key, 20000, loss_lib.FlowMatchingLoss())
    chex.assert_shape(plain, (20000,))
    assert 0 < float(plain.min()) and float(plain.max()) < 1
    assert abs(float(jnp.median(plain)) - 0.5) < 0.01           # sigmoid(N(0, 1)) has median 1/2
    shifted = loss_lib.sample_sigmas(key, 20000, loss_lib.FlowMatchingLoss(shift=3.0))
    np.testing.assert_allclose(shifted, 3 * plain / (1 + 2 * plain), rtol=1e-6)   # same draws, shifted
    uniform = loss_lib.sample_sigmas(key, 20000, loss_lib.FlowMatchingLoss(timestep_sampling="uniform"))
    assert abs(float(jnp.mean(uniform < 0.25)) - 0.25) < 0.01


def test_target_is_the_samplers_velocity():
    rng = np.random.default_rng(0)
    x0, noise = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    sigma = jnp.array([0.0, 0.7])
    x_t, v = loss_lib.noisy_latents(jnp.asarray(x0), jnp.asarray(noise), sigma)
    np.testing.assert_allclose(x_t[0], x0[0], rtol=1e-6)
    np.testing.assert_allclose(v, noise - x0, rtol=1e-6)
    # one Euler step of the sampler (x + v * (0 - sigma)) from x_t with the true velocity lands on x0
    np.testing.assert_allclose(x_t[1] + v[1] * (0.0 - 0.7), x0[1], rtol=1e-5, atol=1e-6)


def test_text_dropout():
    batch = {"latents": jnp.zeros((64, 1)), "text_states": jnp.ones((64, 3, 2)), "text_mask": jnp.ones((64, 3), int),
             "text_pooled": jnp.ones((64, 5))}
    null = {"text_states": jnp.zeros((3, 2)), "text_mask": jnp.array([1, 0, 0]), "text_pooled": jnp.zeros((5,))}
    key = jax.random.key(1)
    assert loss_lib.drop_text(key, batch, null, 0.0) is batch
    all_null = loss_lib.drop_text(key, batch, null, 1.0)
    np.testing.assert_array_equal(all_null["text_mask"], np.tile([1, 0, 0], (64, 1)))
    half = loss_lib.drop_text(key, batch, null, 0.5)
    dropped = np.asarray(half["text_pooled"][:, 0] == 0)
    assert 10 < dropped.sum() < 54
    np.testing.assert_array_equal(np.asarray(half["text_states"][:, 0, 0] == 0), dropped)  # whole samples


def test_bucket_sums():
    sums, counts = loss_lib.bucket_sums(jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([0.1, 0.3, 0.35, 0.99]), 4)
    np.testing.assert_allclose(sums, [1.0, 5.0, 0.0, 4.0])
    np.testing.assert_allclose(counts, [1, 2, 0, 1])


def test_schedule_warmup_then_cosine():
    sched = optimizer.learning_rate_schedule(
        optimizer.OptimizerConfig(learning_rate=1.0, warmup_steps=10, schedule="cosine", end_ratio=0.1), 110)
    np.testing.assert_allclose([sched(0), sched(5), sched(10), sched(60), sched(110)], [0, 0.5, 1.0, 0.55, 0.1],
                               atol=1e-6)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="schedule 'cos' not in"):
        optimizer.OptimizerConfig(schedule="cos")
    with pytest.raises(ValueError, match="text_dropout must be in"):
        loss_lib.FlowMatchingLoss(text_dropout=1.5)
    params = abstract_params(configs.get("tiny").dit)
    with pytest.raises(ValueError, match=r"\['audio\*'\] match no param"):
        trainable.select(params, ["audio*", "img_in/*"])


def test_self_attention_selection():
    params = abstract_params(configs.get("tiny").dit)
    chosen = trainable.select(params, trainable.SELF_ATTENTION)
    assert "double_blocks/img_attn_qkv/kernel" in chosen and "single_blocks/linear1/kernel" in chosen
    assert not any("mlp" in n or "mod" in n or n.startswith(("txt_in", "img_in", "final")) for n in chosen), chosen


def test_frozen_params_stay_and_get_no_optimizer_state():
    cfg = configs.get("tiny").dit
    params = random_params(cfg, seed=0)
    opt = optimizer.OptimizerConfig(learning_rate=1e-2)
    tx = optimizer.make_optimizer(opt, 10)
    chosen = trainable.select(params, ["final_layer/*"])
    state = state_lib.create(params, tx, chosen, seed=0)
    moments = jax.tree.leaves(state.opt_state)
    assert sum(x.size for x in moments) < 3 * sum(params["final_layer"][k]["kernel"].size for k in
                                                  ("linear", "adaLN_modulation_1"))
    rng = np.random.default_rng(0)
    batch = {"latents": rng.standard_normal((2, 1, 4, 4, 16), np.float32),
             "text_states": rng.standard_normal((2, 3, 32), np.float32), "text_mask": np.ones((2, 3), np.int32),
             "text_pooled": rng.standard_normal((2, 16), np.float32)}
    null = {k: np.zeros(v.shape[1:], v.dtype) for k, v in batch.items() if k != "latents"}
    step = jax.jit(make_train_step(HunyuanVideoDiT(cfg), loss_lib.FlowMatchingLoss(), opt, tx, chosen))
    new, metrics = step(state, batch, null)
    assert int(new.step) == 1 and np.isfinite(float(metrics["loss"]))
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), new.params, state.params)
    assert all(jax.tree.leaves({k: v for k, v in same.items() if k != "final_layer"}))
    assert not all(jax.tree.leaves(same["final_layer"]))


class _Mesh:
    shape = {"data": 2, "fsdp": 4, "tensor": 2, "sequence": 1}


def test_logical_to_mesh():
    mesh = _Mesh()
    assert logical_to_mesh(("layers", "embed", "mlp"), (3, 64, 256), mesh) == jax.P(None, "fsdp", "tensor")
    assert logical_to_mesh(("embed", "mlp"), (6, 256), mesh) == jax.P(None, "tensor")   # 6 % 4: replicated
    assert logical_to_mesh(("activation_batch", "activation_length"), (8, 10), mesh) == jax.P(("data", "fsdp"))
    assert logical_to_mesh(("activation_batch",), (2,), mesh) == jax.P("data")
    assert logical_to_mesh(("head_dim",), (128,), mesh) == jax.P()
