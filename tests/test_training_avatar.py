"""HunyuanVideo-Avatar training: ``hcjax train`` on experiments/configs/avatar.py's tiny variants (synthetic data,
CPU): audio-tiny lowers the loss; emotion-tiny, seeded from that run's params as a ``tiny-avatar`` model directory
(the emotion params missing, freshly initialised), lowers it further while every other param stays bit-identical;
the Avatar ``make_cond`` and condition dropout; the init_from rule; datasets without a key the model reads stop
before training with one message; tools/precompute_dataset.py makes the Avatar keys."""

import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from hcjax import configs
from hcjax.convert.model_dir import save_model_dir
from hcjax.models.params import init_params
from hcjax.training import init_from
from hcjax.training.cond_inputs import conditioning_inputs, record_extras
from hcjax.training.custom_cond import CondSettings
from hcjax.training.data import DataSpec, InMemorySource, SyntheticSource, check_dataset, open_dataset
from hcjax.training.tfds_builder import write_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "configs", "avatar.py")
STEPS = 80
QUIET = ["--config.train.progress=false", "--config.train.tensorboard=false", "--config.train.export=false"]
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"   # test speed only


def _train(variant, workdir, *extra):
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip())
    cmd = [sys.executable, "-m", "hcjax.cli", "train", "--config", f"{CONFIG}:{variant}", *QUIET,
           f"--config.train.workdir={workdir}", f"--config.train.steps={STEPS}", "--config.train.log_every=1",
           f"--config.train.checkpoint_every={STEPS}", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _params(workdir) -> dict:
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(workdir / "checkpoints" / str(STEPS) / "state")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{variant: workdir}``: audio-tiny, then emotion-tiny from its final params saved as a tiny-avatar model."""
    audio, base, emotion = (tmp_path_factory.mktemp(n) for n in ("audio", "base", "emotion"))
    _train("audio-tiny", audio)
    save_model_dir(base / "model", "tiny-avatar", _params(audio)["params"])
    _train("emotion-tiny", emotion, f"--config.model.init_from={base / 'model'}")
    return {"audio-tiny": audio, "emotion-tiny": emotion}


def _losses(workdir) -> list[float]:
    return [r["loss"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())]


@pytest.mark.parametrize("variant, ratio", [("audio-tiny", 0.7), ("emotion-tiny", 0.93)])
def test_tiny_avatar_loss_falls(runs, variant, ratio):
    losses = _losses(runs[variant])
    assert len(losses) == STEPS
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    print(f"{variant}: loss {first:.3f} -> {last:.3f}")
    assert last < ratio * first, (variant, first, last)


def _flat(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_emotion_run_trains_the_emotion_params_only(runs):
    base = _flat(_params(runs["audio-tiny"])["params"])
    state = _flat(_params(runs["emotion-tiny"]))
    final = {k.removeprefix("params/"): v for k, v in state.items() if k.startswith("params/")}
    assert {k for k in final if not k.startswith("emotion/")} == set(base)
    for k, v in base.items():
        np.testing.assert_array_equal(final[k], v, err_msg=k)                   # frozen: bit-identical
    nu = {k.split("/nu/")[1]: v for k, v in state.items() if "/nu/" in k}
    assert set(nu) == {k for k in final if k.startswith("emotion/")}            # only emotion has optimizer state
    assert all(v.max() > 0 for v in nu.values()), {k: float(v.max()) for k, v in nu.items()}   # all got gradients
    assert all(abs(float(final[f"emotion/cross_attn_{j}/gamma"])) > 0 for j in (0, 1))        # gamma left 0


def _batch(name, n=4, shape=(2, 4, 6)):
    source = SyntheticSource.for_model(configs.get(name).dit, n, latent_shapes=(shape,), text_len=4)
    keys = ("latents", *(k for k, _, _ in source.spec.extra))
    return source, {k: np.stack([source[i][k] for i in range(n)]) for k in keys}


def test_make_cond_layout_and_audio_dropout():
    dit = configs.get("tiny-avatar-emotion").dit
    _, batch = _batch("tiny-avatar-emotion")
    key = jax.random.key(3)
    cond = conditioning_inputs(dit).make_cond(batch, key)
    chex.assert_shape(cond.ref_latents, (4, 2, 4, 6, 16))                          # repeated over T
    np.testing.assert_array_equal(cond.ref_latents[:, 1], batch["ref_latents"][:, 0])
    chex.assert_shape(cond.emotion_latents, (4, 4, 6, 16))
    np.testing.assert_array_equal(cond.emotion_latents, batch["emotion_latents"][:, 0])
    np.testing.assert_array_equal(cond.audio_feats, batch["audio_feats"])
    assert cond.motion_exp is None and cond.fps is None                            # the official constants
    dropped = conditioning_inputs(dit, CondSettings(audio_dropout=1.0)).make_cond(batch, key)
    assert not np.asarray(dropped.audio_feats).any()
    for k in ("face_mask", "emotion_latents", "ref_latents"):                      # kept
        np.testing.assert_array_equal(getattr(dropped, k), getattr(cond, k))
    half = np.asarray(conditioning_inputs(dit, CondSettings(audio_dropout=0.5)).make_cond(batch, key).audio_feats)
    zero = ~half.reshape(4, -1).any(axis=1)
    assert 0 < zero.sum() < 4
    with pytest.raises(ValueError, match="Avatar has no audio strength"):
        conditioning_inputs(dit, CondSettings(audio_strength=0.5))


def test_synthetic_avatar_records():
    for name in ("tiny-avatar", "tiny-avatar-emotion"):
        dit = configs.get(name).dit
        source, _ = _batch(name, shape=(3, 4, 6))
        check_dataset(source, dit, text_len=4)
        conditioning_inputs(dit).check_source(source)
        assert source.spec.extra == record_extras(dit)
        r = source[1]
        np.testing.assert_array_equal(r["ref_latents"], r["latents"][:1])            # the first latent frame
        chex.assert_shape(r["audio_feats"], (9, 10, 5, 16))
        chex.assert_shape(r["face_mask"], (1, 4, 6))
        assert set(np.unique(r["face_mask"])) == {0.0, 1.0}
        if "emotion_latents" in r:
            np.testing.assert_array_equal(r["emotion_latents"], r["latents"][-1:])  # the last latent frame
    assert [k for k, _, _ in record_extras(configs.get("tiny-avatar-emotion"))] == [
        "ref_latents", "audio_feats", "face_mask", "emotion_latents"]
    assert record_extras(configs.get("tiny-custom-audio"))[1][0] == "audio_feats"    # Custom unchanged


def test_init_from_rule():
    emotion = configs.get("tiny-avatar-emotion")
    init_from.check_preset("d", "tiny-avatar", emotion)                              # the emotion params may lack
    init_from.check_preset("d", "tiny-avatar-emotion", emotion)
    for stored, preset in (("tiny-custom-audio", emotion), ("tiny-avatar-emotion", configs.get("tiny-avatar"))):
        with pytest.raises(ValueError, match=f"holds a '{stored}' model, but model.preset is '{preset.name}'"):
            init_from.check_preset("d", stored, preset)
    dit = emotion.dit.replace(depth_single=1)
    params = jax.eval_shape(lambda: init_params(configs.get("tiny-avatar").dit.replace(depth_single=1)))
    completed = jax.eval_shape(lambda p: init_from.complete(p, dit, 0), params)
    assert set(completed) == set(params) | {"emotion"}
    broken = {k: v for k, v in params.items() if k != "face_audio"}
    with pytest.raises(ValueError, match=r"missing face_audio/.*only the params of emotion may be missing"):
        init_from.complete(broken, dit, 0)
    with pytest.raises(ValueError, match=r"unexpected emotion/"):
        init_from.complete(completed, configs.get("tiny-avatar").dit.replace(depth_single=1), 0)
    full_depth = jax.eval_shape(lambda: init_params(configs.get("tiny-avatar").dit))
    with pytest.raises(ValueError, match=r"single_blocks/linear1/kernel is \(2, 64, 448\), the model's \(1, 64, "):
        init_from.complete(full_depth, dit, 0)


def _records(n=4, **extra):
    return [{"latents": np.zeros((2, 4, 6, 16), np.float32), "text_states": np.zeros((8, 32), np.float32),
             "text_mask": np.ones((8,), np.int32), "text_pooled": np.zeros((16,), np.float32), **extra}
            for _ in range(n)]


def test_dataset_without_a_condition_key_stops_before_training(tmp_path, capsys):
    from hcjax.cli import main

    ref = np.zeros((1, 4, 6, 16), np.float32)
    write_dataset(tmp_path / "data", [r | {"caption": "x"} for r in _records(ref_latents=ref)],
                  DataSpec(16, 8, 32, 16, extra=(("ref_latents", (1, "H", "W", 16), "float32"),)))
    capsys.readouterr()
    args = ["train", "--config", f"{CONFIG}:audio-tiny", *QUIET, "--config.data.source=tfds",
            f"--config.data.path={tmp_path / 'data'}", f"--config.train.workdir={tmp_path / 'w'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "has no 'audio_feats' [?, 10, 5, 16], 'face_mask' [1, H, W]" in err and "face region in [0, 1]" in err
    assert not (tmp_path / "w").exists()
    # keys declared but wrong in the records
    dit = configs.get("tiny-avatar-emotion").dit
    cond = conditioning_inputs(dit)
    spec = DataSpec(16, 8, 32, 16, extra=record_extras(dit))
    good = dict(ref_latents=ref, audio_feats=np.zeros((5, 10, 5, 16), np.float32),
                face_mask=np.ones((1, 4, 6), np.float32), emotion_latents=ref)
    cond.check_source(InMemorySource(_records(**good), spec))
    with pytest.raises(ValueError, match="record 0: missing key 'emotion_latents'"):
        check_dataset(InMemorySource(_records(**{k: v for k, v in good.items() if k != "emotion_latents"}), spec))
    with pytest.raises(ValueError, match=r"face_mask has values in \[0, 2\], needs \[0, 1\]"):
        cond.check_source(InMemorySource(_records(**good | {"face_mask": np.linspace(0, 2, 24, dtype=np.float32)
                                                             .reshape(1, 4, 6)}), spec))
    with pytest.raises(ValueError, match=r"audio_feats has 9 frames, the 2 latent frames need 5"):
        cond.check_source(InMemorySource(_records(**good | {"audio_feats": np.zeros((9, 10, 5, 16), np.float32)}),
                                         spec))


def test_precompute_tool_makes_the_avatar_keys(tmp_path, capsys):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import precompute_dataset
    from hcjax.io import write_png
    from hcjax.training.avatar_cond import avatar_inputs
    from tests.test_training_custom import _custom_clips

    src = _custom_clips(tmp_path / "in")
    (src / "faces").mkdir()
    for i in range(2):                                   # the face: pixel rows 8..23, columns 12..35
        mask = np.zeros((32, 48), np.uint8)
        mask[8:24, 12:36] = 255
        write_png(src / "faces" / f"clip{i}.png", np.repeat(mask[..., None], 3, -1))
    common = ["--src", str(src / "videos"), "--buckets", "32x48", "--frames", "5", "--text-len", "8"]
    assert precompute_dataset.main(["--model", "tiny-avatar", "--out", str(tmp_path / "av"), *common,
                                    "--ref-images", str(src / "refs"), "--audio", str(src / "audio"),
                                    "--face-masks", str(src / "faces")]) == 0
    dit = configs.get("tiny-avatar").dit
    source = open_dataset(tmp_path / "av")
    assert source.spec.extra == record_extras(dit)
    check_dataset(source, dit, text_len=8)
    conditioning_inputs(dit).check_source(source)
    avatar_inputs(dit).check_source(source)
    record = source[1]
    chex.assert_shape(record["ref_latents"], (1, 4, 6, 16))
    chex.assert_shape(record["audio_feats"], (5, 10, 5, 16))
    chex.assert_shape(record["face_mask"], (1, 4, 6))
    assert record["face_mask"][0, 0, 0] == 0 and record["face_mask"][0, 1, 2] == 1 == record["face_mask"][0, 2, 3]
    capsys.readouterr()
    # emotion models need --emotion-images, other models refuse it, before any work
    assert precompute_dataset.main(["--model", "tiny-avatar-emotion", "--out", str(tmp_path / "x"), *common,
                                    "--audio", str(src / "audio")]) == 2
    assert "reads emotion images: give --emotion-images DIR" in capsys.readouterr().err
    assert precompute_dataset.main(["--model", "tiny-avatar", "--out", str(tmp_path / "x"), *common,
                                    "--audio", str(src / "audio"), "--emotion-images", str(src / "refs")]) == 2
    assert "--emotion-images: the model tiny-avatar reads no emotion images" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
