"""Training checkpoints: exact round trips (state, RNG, iterator), keep-last-K, asynchronous saves, restores into
other shardings (8 simulated devices, in a subprocess), refusal of another model's checkpoint before any array
read, resuming past an unfinished or killed save, and export of trained params as a model directory."""

import asyncio
import json
import os
import subprocess
import sys
import threading

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from orbax.checkpoint._src.path import atomicity

from hcjax import configs
from hcjax.convert import ModelDirError, load_model_dir, read_model_info, save_model_dir
from hcjax.models import random_params
from hcjax.training.checkpoint import TrainCheckpointer, export_params
from tests.checkpoint_checks import state_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKS = os.path.join(ROOT, "tests", "checkpoint_checks.py")


@flax.struct.dataclass
class State:
    step: jax.Array
    params: dict
    opt_state: optax.OptState
    ema_params: dict | None
    rng: jax.Array
    key: jax.Array  # a typed key


class FakeIterator:
    def __init__(self, position: int = 0):
        self.position = position

    def get_state(self) -> dict:
        return {"position": self.position, "epoch": [1, 2]}

    def set_state(self, state: dict) -> None:
        self.position = state["position"]


def make_state(step: int = 0, shape=(4, 3), extra: bool = False, seed: int = 0) -> State:
    k = jax.random.split(jax.random.key(seed), 3)
    params = {"blocks": {"w": jax.random.normal(k[0], shape), "b": jax.random.normal(k[1], (shape[-1],))},
              "head": jnp.linspace(-1, 1, 5, dtype=jnp.float32) * (step + 1)}
    if extra:
        params["extra"] = jnp.zeros((2,))
    opt = optax.adamw(1e-3)
    opt_state = opt.init(params)
    _, opt_state = opt.update(jax.tree.map(jnp.ones_like, params), opt_state, params)  # nonzero moments
    return State(jnp.int32(step), params, opt_state, None, jax.random.key_data(jax.random.fold_in(k[2], step)),
                 jax.random.key(step + 100))


def abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def raw(x):
    return np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)


def assert_identical(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(raw(g), raw(w))


def test_round_trip_is_bit_identical(tmp_path):
    state, it = make_state(7), FakeIterator(42)
    with TrainCheckpointer(tmp_path, save_every=1) as ckpt:
        assert ckpt.restore_latest(abstract(state)) is None
        assert ckpt.save(7, state, it)
    it2 = FakeIterator()
    with TrainCheckpointer(tmp_path) as ckpt:
        got, step = ckpt.restore_latest(abstract(state), it2)
    assert step == 7 and it2.position == 42
    assert_identical(got, state)
    assert isinstance(got, State) and got.ema_params is None
    assert jnp.issubdtype(got.key.dtype, jax.dtypes.prng_key)
    assert jax.random.key_impl(got.key) == jax.random.key_impl(state.key)


def test_keep_last_k_and_save_interval(tmp_path):
    with TrainCheckpointer(tmp_path, save_every=2, keep=3) as ckpt:
        saved = [s for s in range(21) if ckpt.save(s, make_state(s))]
        ckpt.wait()
        assert saved == list(range(0, 21, 2))
        assert ckpt.all_steps() == [16, 18, 20]
        assert ckpt.save(21, make_state(21), force=True)
    assert sorted(int(p.name) for p in tmp_path.iterdir()) == [18, 20, 21]
    with TrainCheckpointer(tmp_path) as ckpt:
        got, step = ckpt.restore_latest(abstract(make_state()))
    assert step == 21
    assert_identical(got, make_state(21))


def test_save_is_asynchronous_and_wait_makes_it_durable(tmp_path, monkeypatch):
    """The final rename of a save is held back: ``save`` must return while it waits; ``wait`` then finishes."""
    release, waited = threading.Event(), []
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def held_finalize(self, *args, **kwargs):
        waited.append(await asyncio.to_thread(release.wait, 20))
        return await finalize(self, *args, **kwargs)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", held_finalize)
    with TrainCheckpointer(tmp_path) as ckpt:
        try:
            assert ckpt.save(3, make_state(3), FakeIterator(1))
            assert ckpt.manager.is_saving_in_progress() and not (tmp_path / "3").exists()
            assert [p.name for p in tmp_path.iterdir()] == ["3.orbax-checkpoint-tmp"]
        finally:
            release.set()
        ckpt.wait()
        assert not ckpt.manager.is_saving_in_progress() and [p.name for p in tmp_path.iterdir()] == ["3"]
        assert ckpt.restore_latest(abstract(make_state()))[1] == 3
    assert waited and all(waited)  # no finalize timed out, i.e. nothing waited synchronously inside save


@pytest.mark.parametrize("change", ["shape", "key", "config"])
def test_other_model_is_refused_before_reading_arrays(tmp_path, change):
    config = {"hidden_size": 64, "depth": 2, "attention_impl": "xla"}
    with TrainCheckpointer(tmp_path, model_config=config) as ckpt:
        ckpt.save(1, make_state(1), FakeIterator(), force=True)
    other = {"shape": make_state(shape=(4, 4)), "key": make_state(extra=True), "config": make_state()}[change]
    other_config = dict(config, hidden_size=128) if change == "config" else config
    ckpt = TrainCheckpointer(tmp_path, model_config=other_config)
    restores = []
    real_restore = ckpt.manager.restore
    ckpt.manager.restore = lambda step, args=None, **kw: restores.append(set(args.keys())) or real_restore(
        step, args=args, **kw)
    with ckpt, pytest.raises(ValueError) as err:
        ckpt.restore_latest(abstract(other), FakeIterator())
    msg = str(err.value)
    assert "checkpoint of another model" in msg and "--config.train.workdir" in msg and "start fresh" in msg
    expected = {"shape": "state params/blocks/w: checkpoint has [[4, 3], 'float32'], now [[4, 4], 'float32']",
                "key": "state params/extra: not in the checkpoint",
                "config": "config hidden_size: checkpoint has 64, now 128"}[change]
    assert expected in msg, msg
    assert restores == [{"model"}]  # only the JSON metadata was read


def test_execution_fields_may_change_and_long_lists_are_capped(tmp_path):
    with TrainCheckpointer(tmp_path, model_config={"hidden_size": 64, "attention_impl": "xla"}) as ckpt:
        ckpt.save(1, make_state(1), force=True)
    with TrainCheckpointer(tmp_path, model_config={"hidden_size": 64, "attention_impl": "splash"}) as ckpt:
        assert ckpt.restore_latest(abstract(make_state()))[1] == 1
        big = {f"p{i}": jax.ShapeDtypeStruct((1,), jnp.float32) for i in range(30)}
        with pytest.raises(ValueError, match=r"differences:[\s\S]*\.\.\. and \d+ more"):
            ckpt.restore_latest(big)


def test_unfinished_checkpoint_is_ignored_and_cleaned(tmp_path):
    with TrainCheckpointer(tmp_path) as ckpt:
        ckpt.save(2, make_state(2), force=True)
    for name in ("5.orbax-checkpoint-tmp", "6.orbax-checkpoint-tmp-1700000000"):  # what a killed save leaves
        (tmp_path / name / "state.orbax-checkpoint-tmp").mkdir(parents=True)
        (tmp_path / name / "_CHECKPOINT_METADATA").write_text("{}")
    with TrainCheckpointer(tmp_path) as ckpt:
        got, step = ckpt.restore_latest(abstract(make_state()))
        assert step == 2 and ckpt.all_steps() == [2]
        assert_identical(got, make_state(2))
        ckpt.save(3, got, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "3"]


def test_resume_after_sigkill_mid_save(tmp_path):
    proc = subprocess.run([sys.executable, CHECKS, "killed", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == -9, proc.stderr[-3000:]
    with TrainCheckpointer(tmp_path) as ckpt:
        got, step = ckpt.restore_latest(abstract(state_of(0, size=4096)))
    assert step in (1, 2)  # 1 unless the kill came after the save of 2 was finalised
    assert_identical(got, state_of(step, size=4096))


def test_restore_into_other_shardings(tmp_path):
    """Saved fsdp-8 over axis 0, restored into a 4x2 mesh three ways (8 simulated devices, in a subprocess)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, CHECKS, "sharded", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["saved_sharded"]
    shard_shapes = {"grid": [[4, 4]], "columns": [[16, 1]], "replicated": [[16, 8]]}  # of a [16, 8] array
    for name, want in shard_shapes.items():
        r = out[name]
        assert r["step"] == 5 and r["values"] and r["shardings"] and r["leaves"] == 10, out
        assert r["shard_shape"] == want, out


def test_export_params_makes_a_model_dir(tmp_path):
    preset = configs.get("tiny")
    base = tmp_path / "base"
    dit, vae = random_params(preset.dit, 0), random_params(preset.vae, 1)
    save_model_dir(base, "tiny", dit, vae)
    (base / "text_encoders").mkdir()
    (base / "text_encoders" / "config.json").write_text("{}")
    trained = jax.jit(lambda t: jax.tree.map(lambda x: (x + 1).astype(jnp.bfloat16), t))(dit)
    out = export_params(tmp_path / "trained", "tiny", trained, base_model_dir=base)
    assert read_model_info(out)["parts"] == ["dit", "vae"] and (out / "text_encoders" / "config.json").is_file()
    _, dit2, vae2 = load_model_dir(out)
    assert_identical(dit2, jax.tree.map(lambda x: x.astype(jnp.float32), trained))  # cast to the preset's fp32
    assert_identical(vae2, vae)
    with pytest.raises(ModelDirError, match="exists already"):
        export_params(out, "tiny", trained, vae)
    bad = dict(trained, extra=jnp.zeros(3))
    with pytest.raises(ModelDirError, match="unexpected: extra"):
        export_params(tmp_path / "bad", "tiny", bad, vae)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "trained"]  # nothing half-written
