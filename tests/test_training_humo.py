"""HuMo training on the tiny model (CPU): the subject stage (experiments/configs/humo.py:subject-tiny) changes only
the self-attention params; the progressive stage, seeded from it, trains the audio modules and the mask head with
the focus-by-predicting loss on audio tasks; ``make_cond`` gates the audio by task; the mask predictor learns a
known face box (IoU rises); a ``hunyuan-video-t2v``-shaped directory may seed ``humo``."""

from __future__ import annotations

import importlib.util
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import traverse_util

from hcjax import configs
from hcjax.convert.model_dir import save_model_dir
from hcjax.models import HunyuanVideoDiT
from hcjax.models.params import abstract_params, init_params
from hcjax.training import init_from
from hcjax.training import trainable as trainable_lib
from hcjax.training.cond_inputs import conditioning_inputs
from hcjax.training.custom_cond import CondSettings
from hcjax.training.data_synthetic import SyntheticSource
from hcjax.training.loop import train
from hcjax.training.loss import FlowMatchingLoss
from hcjax.training.optimizer import OptimizerConfig, make_optimizer
from hcjax.training.state import create
from hcjax.training.step import make_train_step
from hcjax.training.task_mixer import TASK_AUDIO, TASK_SUBJECT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(variant, workdir, steps, **changes):
    spec = importlib.util.spec_from_file_location("humo_config", os.path.join(ROOT, "experiments/configs/humo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config(variant)
    c.train.workdir, c.train.steps, c.train.log_every = str(workdir), steps, 1
    c.train.checkpoint_every, c.train.progress, c.train.tensorboard = steps, False, False
    c.data.synthetic_shape = (2, 4, 6)
    for key, value in changes.items():
        section, name = key.split(".")
        setattr(getattr(c, section), name, value)
    return c


def _flat(params):
    return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}


def _final_params(workdir, steps) -> dict:
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(workdir / "checkpoints" / str(steps) / "state")["params"]


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """Two steps of each stage (the first step's learning rate is 0 in warm-up); the subject stage's params become a
    ``tiny-humo`` model directory that seeds the progressive stage."""
    subject, progressive, model = (tmp_path_factory.mktemp(n) for n in ("subject", "progressive", "model"))
    rng = np.random.default_rng(0)       # a "trained" tiny T2V model: no zero-initialised kernel (gates, final layer)
    backbone = jax.tree.map(lambda p: rng.normal(0, 0.05, p.shape).astype(np.float32) if p.ndim > 1 and not np.any(p)
                            else np.asarray(p), init_params(configs.get("tiny").dit, 5))
    save_model_dir(model / "t2v", "tiny", backbone)
    train(_config("subject-tiny", subject, 2, **{"train.export": False, "model.init_from": str(model / "t2v")}))
    after_subject = _final_params(subject, 2)
    save_model_dir(model / "subject", "tiny-humo", after_subject)
    records = train(_config("progressive-tiny", progressive, 2, **{   # every sample an audio task (mask loss on)
        "model.init_from": str(model / "subject"), "train.export": False, "tasks.start_fraction": 1.0,
        "tasks.end_fraction": 1.0}))
    seeded = init_from.complete(backbone, configs.get("tiny-humo").dit, 0)
    return _flat(seeded), _flat(after_subject), _flat(_final_params(progressive, 2)), records


def test_subject_stage_changes_only_self_attention(stages):
    before, after, _, _ = stages
    cfg = configs.get("tiny-humo").dit
    d = cfg.hidden_size
    attention = {k for k in before if k.startswith("double_blocks/") and "_attn_" in k
                 or k.startswith(("single_blocks/q_norm", "single_blocks/k_norm"))}
    for k, v in before.items():
        if k in attention:
            assert not np.array_equal(after[k], v), k
        elif k.startswith("single_blocks/linear1/"):            # q, k, v columns train, the MLP's stay
            assert not np.array_equal(after[k][..., :3 * d], v[..., :3 * d]), k
            np.testing.assert_array_equal(after[k][..., 3 * d:], v[..., 3 * d:])
        elif k == "single_blocks/linear2/kernel":               # attention rows train, the MLP's stay
            assert not np.array_equal(after[k][:, :d], v[:, :d])
            np.testing.assert_array_equal(after[k][:, d:], v[:, d:])
        elif k == "single_blocks/linear2/bias":
            assert not np.array_equal(after[k], v)
        else:                                                   # audio, mask head, MLPs, modulation, embedders
            np.testing.assert_array_equal(after[k], v, err_msg=k)


def test_progressive_stage_trains_audio_and_mask_head(stages):
    _, before, after, records = stages
    for prefix in ("audio/", "mask_predictor/"):
        assert any(not np.array_equal(after[k], before[k]) for k in before if k.startswith(prefix)), prefix
    np.testing.assert_array_equal(after["final_layer/linear/kernel"], before["final_layer/linear/kernel"])
    assert all(r["mask_loss"] > 0 and 0 < r["mask_loss_weight"] <= 0.1 + 1e-6 for r in records)
    assert [r["step"] for r in records] == [1, 2]


def test_make_cond_gates_audio_by_task_and_drops_the_image():
    cfg = configs.get("tiny-humo").dit
    src = SyntheticSource.for_model(cfg, 4, latent_shapes=((2, 4, 6),))
    batch = {k: np.stack([src[i][k] for i in range(4)]) for k in src[0] if k != "caption"}
    batch["task"] = np.array([TASK_SUBJECT, TASK_AUDIO, TASK_AUDIO, TASK_SUBJECT], np.int32)
    inputs = conditioning_inputs(cfg)
    cond = inputs.make_cond(batch, jax.random.key(0))
    chex.assert_shape(cond.audio_feats, (4, 2, 8, 5, 16))
    np.testing.assert_array_equal(np.asarray(cond.audio_feats)[[0, 3]], 0.0)
    np.testing.assert_array_equal(np.asarray(cond.audio_feats)[[1, 2]], batch["audio_feats"][[1, 2]])
    dropped = conditioning_inputs(cfg, CondSettings(image_dropout=1.0)).make_cond(batch, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(dropped.ref_latents), 0.0)
    with pytest.raises(ValueError, match="image_dropout"):
        conditioning_inputs(configs.get("tiny-custom").dit, CondSettings(image_dropout=0.1))


def test_a_distilled_backbone_seeds_humo():
    init_from.check_preset("d", "hunyuan-video-t2v", configs.get("humo"))
    init_from.check_preset("d", "tiny", configs.get("tiny-humo"))
    with pytest.raises(ValueError, match="tiny-avatar"):
        init_from.check_preset("d", "tiny-avatar", configs.get("tiny-humo"))
    cfg = configs.get("tiny-humo").dit
    backbone = init_params(configs.get("tiny").dit, 1)            # with guidance_in
    full = init_from.complete(backbone, cfg, 0)
    assert "guidance_in" not in full and set(full) == set(abstract_params(cfg))
    np.testing.assert_array_equal(full["img_in"]["proj"]["kernel"], backbone["img_in"]["proj"]["kernel"])
    assert not np.any(np.asarray(full["audio"]["audio_cross_attn_wrapper_0"]["audio_cross_attn"]["o"]["kernel"]))


def _box_records(rng, n, thw=(2, 8, 8)):
    """Latents of smooth noise with a bright 4 x 4 box at a random place in every frame; the box is the face."""
    t, h, w = thw
    lat = rng.standard_normal((n, t, h, w, 16)).astype(np.float32) * 0.5
    masks = np.zeros((n, 1, h, w), np.float32)
    for i in range(n):
        y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
        lat[i, :, y:y + 4, x:x + 4] += 2.0
        masks[i, 0, y:y + 4, x:x + 4] = 1.0
    return lat, masks


def test_mask_predictor_learns_the_face_box():
    """The mask loss alone (velocity MSE on too) on boxes the head must find: the IoU of ``p > 0.5`` with the box on
    held-out clips at noise level 0.3 rises well above its start."""
    p = configs.get("tiny-humo")
    cfg = p.dit.replace(dtype="float32")
    model = HunyuanVideoDiT(cfg)
    rng = np.random.default_rng(0)
    settings = CondSettings(mask_loss_weight=1.0, mask_loss_end_weight=1.0)
    inputs = conditioning_inputs(cfg, settings)
    opt = OptimizerConfig(learning_rate=3e-3, warmup_steps=5, weight_decay=0.0)
    tx = make_optimizer(opt, 100)
    params = init_params(cfg, 0)
    chosen = trainable_lib.select(params, ("*",))
    state = create(params, tx, chosen, 0)
    loss = FlowMatchingLoss(timestep_sampling="uniform")
    step = jax.jit(make_train_step(model, loss, opt, tx, chosen, inputs.make_cond, inputs.aux_loss))
    null = {"text_states": np.zeros((4, cfg.text_dim), np.float32), "text_mask": np.array([1, 0, 0, 0], np.int32),
            "text_pooled": np.zeros((cfg.pooled_dim,), np.float32)}

    def batch_of(lat, masks):
        b = lat.shape[0]
        return {"latents": lat, "face_mask": masks, "text_states": np.ones((b, 4, cfg.text_dim), np.float32),
                "text_mask": np.ones((b, 4), np.int32), "text_pooled": np.ones((b, cfg.pooled_dim), np.float32),
                "ref_latents": lat[:, :1], "audio_feats": np.zeros((b, lat.shape[1], 8, 5, 16), np.float32)}

    test_lat, test_masks = _box_records(np.random.default_rng(99), 16)
    noise = np.random.default_rng(7).standard_normal(test_lat.shape).astype(np.float32)
    sigma = 0.3
    test = batch_of((1 - sigma) * test_lat + sigma * noise, test_masks)

    @jax.jit
    def iou(params):
        _, variables = model.apply({"params": params}, test["latents"], jnp.full((16,), sigma * 1000),
                                   test["text_states"], test["text_mask"], test["text_pooled"],
                                   cond=inputs.make_cond(test, jax.random.key(0)), mutable=["predictions"])
        pred = variables["predictions"]["mask_predictor"]["face_mask_logits"][0] > 0
        box = jnp.broadcast_to(test["face_mask"] > 0.5, pred.shape)
        return jnp.sum(pred & box) / jnp.maximum(jnp.sum(pred | box), 1)

    start = float(iou(state.params))
    for _ in range(30):
        state, metrics = step(state, batch_of(*_box_records(rng, 8)), null)
    end = float(iou(state.params))
    print(f"mask predictor IoU with the face box: {start:.3f} -> {end:.3f} "
          f"(mask loss {float(metrics['mask_loss']):.3f})")
    assert end > start + 0.2 and end > 0.5
