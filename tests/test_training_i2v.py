"""Image-to-video training (token replacement): the first latent frame goes in clean and is not scored, the tiny
I2V config learns, the precompute tool writes ``first_latents``, and a dataset without it stops before training."""

import functools
import json
import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax import configs
from hcjax.models import HunyuanVideoDiT, random_params
from hcjax.training import aot_cond, optimizer, state as state_lib, trainable
from hcjax.training import loss as loss_lib
from hcjax.training.cond_inputs import conditioning_inputs, record_extras
from hcjax.training.custom_cond import CondSettings
from hcjax.training.data import DataSpec, SyntheticSource, check_dataset, open_dataset
from hcjax.training.i2v_cond import I2VInputs
from hcjax.training.step import make_train_step
from hcjax.training.tfds_builder import write_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "configs", "i2v.py")
QUIET = ["--config.train.progress=false", "--config.train.tensorboard=false", "--config.train.export=false"]


def test_with_clean_lead():
    x = jnp.arange(2 * 3 * 2 * 2 * 4, dtype=jnp.float32).reshape(2, 3, 2, 2, 4)
    lead = -jnp.ones((2, 1, 2, 2, 4))
    out, k = loss_lib.with_clean_lead(x, lead)
    assert k == 1
    np.testing.assert_array_equal(out[:, :1], lead)
    np.testing.assert_array_equal(out[:, 1:], x[:, 1:])
    for bad in (jnp.ones((2, 1, 2, 3, 4)), jnp.ones((2, 3, 2, 2, 4)), jnp.ones((1, 1, 2, 2, 4))):
        with pytest.raises(ValueError, match="do not lead latents"):
            loss_lib.with_clean_lead(x, bad)


def test_i2v_models_read_first_latents():
    dit = configs.get("tiny-i2v").dit
    assert record_extras(dit) == (("first_latents", (1, "H", "W", 16), "float32"),)
    inputs = conditioning_inputs(dit)
    assert isinstance(inputs, I2VInputs) and inputs.make_cond({}, jax.random.key(0)) is None
    assert conditioning_inputs(configs.get("tiny").dit) is None
    latents = jax.ShapeDtypeStruct((2, 3, 4, 6, 16), jnp.float32)
    assert aot_cond.cond_inputs(dit, latents, 0)["first_latents"].shape == (2, 1, 4, 6, 16)
    record = SyntheticSource.for_model(dit, 4)[0]
    np.testing.assert_array_equal(record["first_latents"], record["latents"][:1])
    with pytest.raises(ValueError, match="image-to-video model has no audio"):
        conditioning_inputs(dit, CondSettings(audio_dropout=0.5))


@functools.lru_cache(maxsize=2)
def _step(clean_lead):
    """``(jitted tiny-i2v train step, its initial state)``."""
    cfg = configs.get("tiny-i2v").dit
    params = random_params(cfg, seed=0)
    opt = optimizer.OptimizerConfig(learning_rate=1e-2)
    tx = optimizer.make_optimizer(opt, 10)
    chosen = trainable.select(params, trainable.ALL)
    step = jax.jit(make_train_step(HunyuanVideoDiT(cfg), loss_lib.FlowMatchingLoss(), opt, tx, chosen,
                                   clean_lead=clean_lead))
    return step, state_lib.create(params, tx, chosen, seed=0)


def _step_outputs(batch, clean_lead):
    """``(loss, updated params)`` of one tiny-i2v step on ``batch`` (same params and randomness every call)."""
    step, state = _step(clean_lead)
    null = {k: np.zeros(batch[k].shape[1:], batch[k].dtype) for k in loss_lib.TEXT_KEYS}
    new, metrics = step(state, batch, null)
    return float(metrics["loss"]), new.params


def test_step_feeds_the_first_frame_clean_and_does_not_score_it():
    dit = configs.get("tiny-i2v").dit
    source = SyntheticSource.for_model(dit, 4, latent_shapes=((3, 4, 6),))
    batch = {k: np.stack([source[i][k] for i in range(2)]) for k in source[0] if k != "caption"}
    chex.assert_shape(batch["first_latents"], (2, 1, 4, 6, 16))
    lead = conditioning_inputs(dit).clean_lead
    moved = dict(batch, latents=batch["latents"].copy())
    moved["latents"][:, 0] += 5.0          # the clip's own first latent frame: neither seen nor scored

    loss, params = _step_outputs(batch, lead)
    loss_moved, params_moved = _step_outputs(moved, lead)
    assert loss == loss_moved
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), params, params_moved)))
    # without the clean lead the same change shows in the loss (so the check above can fail) ...
    assert _step_outputs(batch, None)[0] != _step_outputs(moved, None)[0]
    # ... and the image latent is what the model sees
    other = dict(batch, first_latents=batch["first_latents"] + 1.0)
    assert _step_outputs(other, lead)[0] != loss


def _train(workdir, *extra):
    from hcjax.cli import main

    return main(["train", "--config", f"{CONFIG}:tiny", *QUIET, f"--config.train.workdir={workdir}", *extra])


def test_tiny_i2v_loss_falls(tmp_path):
    steps = 80
    assert _train(tmp_path / "w", f"--config.train.steps={steps}", "--config.train.log_every=1",
                  f"--config.train.checkpoint_every={steps}") == 0
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "w" / "metrics.jsonl").read_text().splitlines())]
    assert len(losses) == steps
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    print(f"tiny-i2v: loss {first:.3f} -> {last:.3f}")
    assert last < 0.7 * first, (first, last)


def test_dataset_without_first_latents_stops_before_training(tmp_path, capsys):
    records = [{"latents": np.zeros((2, 4, 6, 16), np.float32), "text_states": np.zeros((8, 32), np.float32),
                "text_mask": np.ones((8,), np.int32), "text_pooled": np.zeros((16,), np.float32), "caption": "x"}
               for _ in range(4)]
    write_dataset(tmp_path / "data", records, DataSpec(16, 8, 32, 16))
    capsys.readouterr()
    assert _train(tmp_path / "w", "--config.data.source=tfds", f"--config.data.path={tmp_path / 'data'}") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "has no 'first_latents' [1, H, W, 16]" in err and "image-to-video --model" in err
    assert not (tmp_path / "w").exists()


def test_precompute_tool_writes_the_first_frame_latent(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import precompute_dataset
    from hcjax.io import image_to_unit_range, read_video
    from hcjax.pipelines.custom import vae_posterior
    from tests.test_training_custom import _custom_clips

    src = _custom_clips(tmp_path / "in")
    assert precompute_dataset.main(["--model", "tiny-i2v", "--out", str(tmp_path / "i2v"), "--src",
                                    str(src / "videos"), "--buckets", "32x48", "--frames", "5", "--text-len", "8",
                                    "--seed", "3"]) == 0
    preset = configs.get("tiny-i2v")
    source = open_dataset(tmp_path / "i2v")
    assert source.spec.extra == record_extras(preset.dit)
    check_dataset(source, preset.dit, text_len=8)
    conditioning_inputs(preset.dit).check_source(source)
    # record 1: its first frame encoded alone, the posterior sampled with the tool's key for that clip
    first = image_to_unit_range(read_video(src / "videos" / "clip1.mp4")[:1])
    dist = vae_posterior(preset.vae)(random_params(preset.vae, 0), np.asarray(first, np.float32)[None], None)
    k_ref = jax.random.split(jax.random.fold_in(jax.random.key(3), 1), 3)[0]
    want = np.asarray(dist.sample(jax.random.fold_in(k_ref, 2)))[0] * preset.vae.scaling_factor
    got = source[1]["first_latents"]
    chex.assert_shape(got, (1, 4, 6, 16))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, source[1]["latents"][:1], atol=1e-3)   # not the clip's own first latent frame
