"""HunyuanCustom training: ``hcjax train`` on the three tiny custom configs (image, audio, editing; synthetic data,
CPU) lowers the loss and feeds the conditions to the model (Adam's second moment of the audio / editing params is
non-zero, another clip's reference latents change the loss); condition dropout; datasets without a key the model reads
stop before training with one message; tools/precompute_dataset.py makes the condition keys."""

import dataclasses
import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from hcjax import configs
from hcjax.io import write_mp4, write_png
from hcjax.models import HunyuanVideoDiT
from hcjax.training import loop, run_config
from hcjax.training import loss as loss_lib
from hcjax.training.custom_cond import CondSettings, custom_inputs, record_extras
from hcjax.training.data import DataSpec, InMemorySource, SyntheticSource, check_dataset, open_dataset
from hcjax.training.tfds_builder import write_dataset

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import precompute_dataset  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "configs", "custom.py")
VARIANTS = ("tiny", "audio-tiny", "editing-tiny")
STEPS = 80
# One single block, and one double block where the audio adapter's blocks 0, 1 allow: a third of the compile time.
DEPTHS = {v: ["--config.model.depth_single=1", f"--config.model.depth_double={2 if 'audio' in v else 1}"]
          for v in VARIANTS}
QUIET = ["--config.train.progress=false", "--config.train.tensorboard=false", "--config.train.export=false"]
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"   # test speed only


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{variant: workdir}`` of the three tiny runs, trained side by side in subprocesses."""
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip())
    procs = {}
    for v in VARIANTS:
        workdir = tmp_path_factory.mktemp(v)
        cmd = [sys.executable, "-m", "hcjax.cli", "train", "--config", f"{CONFIG}:{v}", *QUIET,
               f"--config.train.workdir={workdir}", f"--config.train.steps={STEPS}", "--config.train.log_every=1",
               f"--config.train.checkpoint_every={STEPS}", *DEPTHS[v]]
        with open(workdir / "stderr.txt", "w") as err:   # a file: no pipe to fill while another run is waited on
            procs[v] = workdir, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    for v, (workdir, proc) in procs.items():
        assert proc.wait(timeout=600) == 0, (workdir / "stderr.txt").read_text()[-3000:]
    return {v: workdir for v, (workdir, _) in procs.items()}


def _losses(workdir) -> list[float]:
    return [r["loss"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())]


def _final_state(workdir) -> dict:
    """The train state of the run's last checkpoint, as nested dicts of numpy arrays."""
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(workdir / "checkpoints" / str(STEPS) / "state")


def _flat(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_custom_loss_falls(runs, variant):
    losses = _losses(runs[variant])
    assert len(losses) == STEPS
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.7 * first, (variant, first, last)


@pytest.mark.parametrize("variant, mechanism", [("audio-tiny", "audio"), ("editing-tiny", "editing")])
def test_mechanism_params_get_gradients(runs, variant, mechanism):
    state = _flat(_final_state(runs[variant]))
    nu = {k: v for k, v in state.items() if "/nu/" in k and f"/{mechanism}/" in k}
    assert nu and all(v.max() > 0 for v in nu.values()), {k: float(v.max()) for k, v in nu.items()}
    if mechanism == "audio":                     # to_out starts at zero (the official init)
        assert np.abs(state["params/audio/audio_models_0/to_out/kernel"]).max() > 0


def _built(variant, *overrides):
    config = run_config.apply_overrides(run_config.load(f"{CONFIG}:{variant}"), list(overrides))
    return loop.build(config)


def test_reference_latents_change_the_loss(runs, tmp_path):
    """The tiny image run's model, fed through ``make_cond``: another clip's reference latents change its loss
    (300 steps of the full tiny config learn to use them: +50% loss with another clip's; experiments/README.md)."""
    run = _built("tiny", f"config.train.workdir={tmp_path}", *(d[2:] for d in DEPTHS["tiny"]))
    params = _final_state(runs["tiny"])["params"]
    batch = {k: np.stack([run.source[i][k] for i in range(4)]) for k in ("latents", "text_states", "text_mask",
                                                                         "text_pooled", "ref_latents")}
    model = HunyuanVideoDiT(run.dit)

    @jax.jit
    def loss(b, key):
        k_sigma, k_noise = jax.random.split(key)
        sigma = jax.random.uniform(k_sigma, (4,))
        x_t, target = loss_lib.noisy_latents(b["latents"], jax.random.normal(k_noise, b["latents"].shape), sigma)
        v = model.apply({"params": params}, x_t, sigma * 1000, b["text_states"], b["text_mask"], b["text_pooled"],
                        cond=run.cond.make_cond(b, key))
        return jnp.mean(loss_lib.per_sample_mse(v, target))

    def mean_loss(b):
        return float(np.mean([loss(b, jax.random.key(i)) for i in range(4)]))

    right = mean_loss(batch)
    wrong = mean_loss(batch | {"ref_latents": np.roll(batch["ref_latents"], 1, axis=0)})
    assert abs(wrong - right) > 1e-3 * right, (right, wrong)


def test_condition_dropout_zeroes_audio_only():
    dit = configs.get("tiny-custom-audio").dit
    source = SyntheticSource.for_model(dit, 8, latent_shapes=((2, 4, 6),), text_len=4)
    batch = {k: np.stack([source[i][k] for i in range(8)]) for k in ("ref_latents", "audio_feats")}
    key = jax.random.key(3)
    kept = custom_inputs(dit).make_cond(batch, key)
    np.testing.assert_array_equal(kept.audio_feats, batch["audio_feats"])
    assert kept.bg_latents is None and kept.audio_strength == 1.0
    dropped = custom_inputs(dit, CondSettings(audio_dropout=1.0, audio_strength=0.8)).make_cond(batch, key)
    assert not np.asarray(dropped.audio_feats).any() and dropped.audio_strength == 0.8
    np.testing.assert_array_equal(dropped.ref_latents, batch["ref_latents"])          # the reference is kept
    half = np.asarray(custom_inputs(dit, CondSettings(audio_dropout=0.5)).make_cond(batch, key).audio_feats)
    zero = ~half.reshape(8, -1).any(axis=1)
    assert 0 < zero.sum() < 8
    np.testing.assert_array_equal(half[~zero], batch["audio_feats"][~zero])
    with pytest.raises(ValueError, match="audio_dropout must be in"):
        CondSettings(audio_dropout=1.5)
    assert custom_inputs(configs.get("tiny").dit) is None and custom_inputs(configs.get("tiny-i2v")) is None


def test_synthetic_conditions_follow_the_latents():
    for name in ("tiny-custom", "tiny-custom-audio", "tiny-custom-editing"):
        dit = configs.get(name).dit
        s = SyntheticSource.for_model(dit, 4, latent_shapes=((3, 4, 6),), text_len=4)
        check_dataset(s, dit, text_len=4)
        custom_inputs(dit).check_source(s)
        assert s.spec.extra == record_extras(dit)
        r = s[1]
        np.testing.assert_array_equal(r["ref_latents"], r["latents"][:1])              # the clip's first frame
        if "audio_feats" in r:
            chex.assert_shape(r["audio_feats"], (9, 10, 5, 16))
            np.testing.assert_array_equal(r["audio_feats"][1], r["audio_feats"][4])    # frames 1-4: latent frame 1
        if "bg_latents" in r:
            masked, mask = np.split(r["bg_latents"], 2, axis=-1)
            inside = mask > 0
            assert 0 < inside.mean() < 1 and not masked[inside].any()
            np.testing.assert_array_equal(masked[~inside], r["latents"][~inside])


def _t2v_records(n=4, **extra):
    return [{"latents": np.zeros((2, 4, 6, 16), np.float32), "text_states": np.zeros((8, 32), np.float32),
             "text_mask": np.ones((8,), np.int32), "text_pooled": np.zeros((16,), np.float32), **extra}
            for _ in range(n)]


def test_dataset_without_a_condition_key_stops_before_training(tmp_path, capsys):
    from hcjax.cli import main

    write_dataset(tmp_path / "data", [r | {"caption": "x"} for r in _t2v_records()], DataSpec(16, 8, 32, 16))
    capsys.readouterr()
    args = ["train", "--config", f"{CONFIG}:audio-tiny", *QUIET, "--config.data.source=tfds",
            f"--config.data.path={tmp_path / 'data'}", f"--config.train.workdir={tmp_path / 'w'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "has no 'ref_latents' [?, H, W, 16], 'audio_feats' [?, 10, 5, 16]" in err and "--audio DIR" in err
    assert not (tmp_path / "w").exists()
    # keys declared by the dataset but wrong in its records
    dit = configs.get("tiny-custom-audio").dit
    cond = custom_inputs(dit)
    spec = DataSpec(16, 8, 32, 16, extra=record_extras(dit))
    ref, audio = np.zeros((1, 4, 6, 16), np.float32), np.zeros((5, 10, 5, 16), np.float32)
    with pytest.raises(ValueError, match="record 0: missing key 'audio_feats'"):
        check_dataset(InMemorySource(_t2v_records(ref_latents=ref), spec), dit)
    with pytest.raises(ValueError, match=r"ref_latents has shape \[1, 4, 8, 16\], needs \[\?, H=4, W=6, 16\]"):
        check_dataset(InMemorySource(_t2v_records(ref_latents=ref[:, :, :2].repeat(4, 2), audio_feats=audio), spec))
    with pytest.raises(ValueError, match=r"audio_feats has 9 frames, the 2 latent frames need 5"):
        cond.check_source(InMemorySource(_t2v_records(ref_latents=ref, audio_feats=audio.repeat(2, 0)[:9]), spec))
    with pytest.raises(ValueError, match=r"audio_feats has shape \[5, 10, 5, 384\], needs \[\?, 10, 5, 16\]"):
        wide = dataclasses.replace(spec, extra=(spec.extra[0], ("audio_feats", (None, 10, 5, None), "float32")))
        cond.check_source(InMemorySource(_t2v_records(ref_latents=ref, audio_feats=audio.repeat(24, -1)), wide))


def _custom_clips(root, n=2, frames=5, h=32, w=48):
    """``root/{videos,masks,refs,audio}``: ``n`` clips of ``frames`` frames with a mask video, a subject image
    and one second of 16 kHz audio each."""
    import wave

    rng = np.random.default_rng(0)
    for d in ("videos", "masks", "refs", "audio"):
        (root / d).mkdir(parents=True)
    for i in range(n):
        base = rng.integers(0, 255, (1, h // 8, w // 8, 3)).repeat(8, 1).repeat(8, 2)
        video = np.concatenate([np.roll(base, t, axis=2) for t in range(frames)]).astype(np.uint8)
        write_mp4(root / "videos" / f"clip{i}.mp4", video, fps=25)
        (root / "videos" / f"clip{i}.txt").write_text(f"clip {i}")
        mask = np.zeros_like(video)
        mask[:, h // 4:3 * h // 4, w // 4:3 * w // 4] = 255
        write_mp4(root / "masks" / f"clip{i}.mp4", mask, fps=25)
        write_png(root / "refs" / f"clip{i}.png", rng.integers(0, 255, (20, 40, 3)).astype(np.uint8))
        with wave.open(str(root / "audio" / f"clip{i}.wav"), "wb") as f:
            f.setnchannels(1), f.setsampwidth(2), f.setframerate(16000)
            f.writeframes((rng.standard_normal(16000) * 3000).astype(np.int16).tobytes())
    return root


def test_precompute_tool_makes_the_condition_keys(tmp_path, capsys):
    src = _custom_clips(tmp_path / "in")
    common = ["--src", str(src / "videos"), "--buckets", "32x48", "--frames", "5", "--text-len", "8"]
    assert precompute_dataset.main(["--model", "tiny-custom-editing", "--out", str(tmp_path / "ed"), *common,
                                    "--ref-images", str(src / "refs"), "--masks", str(src / "masks")]) == 0
    assert precompute_dataset.main(["--model", "tiny-custom-audio", "--out", str(tmp_path / "au"), *common,
                                    "--audio", str(src / "audio")]) == 0
    for name, out in (("tiny-custom-editing", "ed"), ("tiny-custom-audio", "au")):
        dit = configs.get(name).dit
        source = open_dataset(tmp_path / out)
        assert source.spec.extra == record_extras(dit)
        check_dataset(source, dit, text_len=8)
        custom_inputs(dit).check_source(source)
        chex.assert_shape(source[0]["ref_latents"], (1, 4, 6, 16))
    bg = open_dataset(tmp_path / "ed")[1]["bg_latents"]
    chex.assert_shape(bg, (2, 4, 6, 32))
    assert not np.allclose(bg[..., :16], bg[..., 16:])                  # masked video | mask video
    audio = open_dataset(tmp_path / "au")[1]
    chex.assert_shape(audio["audio_feats"], (5, 10, 5, 16))
    # without --ref-images the reference is a VAE posterior sample of the clip's first frame (seed 0, clip 1)
    from hcjax.io import image_to_unit_range, read_video
    from hcjax.models import random_params
    from hcjax.pipelines.custom import vae_posterior

    vae = configs.get("tiny-custom-audio").vae
    first = image_to_unit_range(read_video(src / "videos" / "clip1.mp4")[:1])[None]
    key = jax.random.split(jax.random.fold_in(jax.random.key(0), 1), 3)[0]
    want = vae_posterior(vae)(random_params(vae, 0), first, None).sample(key)[0]
    np.testing.assert_allclose(audio["ref_latents"], want * vae.scaling_factor, rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    # inputs the model needs, or does not read, are named before any work
    assert precompute_dataset.main(["--model", "tiny-custom-audio", "--out", str(tmp_path / "x"), *common]) == 2
    assert "reads audio files: give --audio DIR" in capsys.readouterr().err
    assert precompute_dataset.main(["--model", "tiny-custom", "--out", str(tmp_path / "x"), *common,
                                    "--masks", str(src / "masks")]) == 2
    assert "--masks: the model tiny-custom reads no mask videos" in capsys.readouterr().err
    (src / "masks" / "clip1.mp4").unlink()
    write_mp4(src / "masks" / "clip0.mp4", np.zeros((3, 32, 48, 3), np.uint8), fps=25)
    assert precompute_dataset.main(["--model", "tiny-custom-editing", "--out", str(tmp_path / "x"), *common,
                                    "--masks", str(src / "masks")]) == 2
    err = capsys.readouterr().err
    assert "mask video clip0.mp4 has 3 frames, fewer than the 5 of clip0.mp4" in err
    assert "clip1.mp4 has no mask video in" in err and not (tmp_path / "x").exists()
