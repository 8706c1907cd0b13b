"""Run in a subprocess with 8 simulated CPU devices (``tests/test_training_sharded.py``): the tiny train step
on several meshes against the unsharded step. Prints one JSON dict of relative errors."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from hcjax import configs  # noqa: E402
from hcjax.models import HunyuanVideoDiT, logical_axes, random_params  # noqa: E402
from hcjax.parallel import make_mesh  # noqa: E402
from hcjax.training import loss as loss_lib  # noqa: E402
from hcjax.training import optimizer, state as state_lib, trainable  # noqa: E402
from hcjax.training.sharded_step import ShardedStep  # noqa: E402
from hcjax.training.step import make_train_step  # noqa: E402

MESHES = {"fsdp4_tensor2": dict(fsdp=4, tensor=2), "data2_seq4": dict(data=2, sequence=4)}


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def tree_rel(a, b) -> float:
    leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b))
    num = sum(float(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)) for x, y in leaves)
    den = sum(float(np.sum(np.asarray(y, np.float64) ** 2)) for y in jax.tree.leaves(b))
    return (num / den) ** 0.5


def batch(b: int = 4, thw=(2, 4, 6), text: int = 6, cfg=None):
    rng = np.random.default_rng(1)
    mask = np.zeros((b, text), np.int32)
    for i, n in enumerate([6, 3, 5, 1][:b]):
        mask[i, :n] = 1
    data = {"latents": rng.standard_normal((b, *thw, cfg.in_channels)).astype(np.float32),
            "text_states": rng.standard_normal((b, text, cfg.text_dim)).astype(np.float32),
            "text_mask": mask, "text_pooled": rng.standard_normal((b, cfg.pooled_dim)).astype(np.float32)}
    null = {"text_states": np.zeros((text, cfg.text_dim), np.float32),
            "text_mask": np.eye(1, text, dtype=np.int32)[0], "text_pooled": np.zeros((cfg.pooled_dim,), np.float32)}
    return data, null


def main():
    base = configs.get("tiny").dit.replace(num_heads=4, rope_axes=(4, 6, 6))
    params = random_params(base, seed=0)
    opt = optimizer.OptimizerConfig(learning_rate=1e-3, accum_steps=2, ema_decay=0.5, weight_decay=0.1)
    loss_cfg = loss_lib.FlowMatchingLoss(text_dropout=0.3, shift=3.0)
    tx = optimizer.make_optimizer(opt, 10)
    train = trainable.select(params, trainable.ALL)
    data, null = batch(cfg=base)
    out = {}
    ref_state = state_lib.create(params, tx, train, seed=3, ema=True)
    ref_step = jax.jit(make_train_step(HunyuanVideoDiT(base), loss_cfg, opt, tx, train))
    ref_states, ref_losses = [], []
    s = ref_state
    for _ in range(2):
        s, m = ref_step(s, data, null)
        ref_states.append(jax.device_get(s))
        ref_losses.append(float(m["loss"]))
    for name, degrees in MESHES.items():
        mode = "ulysses" if degrees.get("sequence", 1) > 1 else "none"
        cfg = base.replace(sequence_parallel=mode)
        mesh = make_mesh(**degrees)
        abstract = state_lib.abstract(params, tx, train, ema=True)
        shardings = state_lib.shardings(abstract, logical_axes(cfg), mesh, tx, train)
        s = jax.jit(lambda p: state_lib.create(p, tx, train, seed=3, ema=True), out_shardings=shardings)(params)
        step = ShardedStep(make_train_step(HunyuanVideoDiT(cfg), loss_cfg, opt, tx, train), mesh, shardings)
        for i in range(2):
            s, m = step(s, data, null)
            out[f"{name}_loss{i}"] = abs(float(m["loss"]) - ref_losses[i]) / abs(ref_losses[i])
            out[f"{name}_state{i}"] = tree_rel(jax.device_get(s), ref_states[i])
        sharded = [str(x.sharding.spec) for x in jax.tree.leaves(s.params) if x.sharding.spec != jax.P()]
        out[f"{name}_sharded_params"] = len(sharded)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
