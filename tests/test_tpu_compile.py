"""``hcjax aot``: the train step of the 13B DiT (full widths, one double and one single block, bf16 compute,
fp32 master params and AdamW state, full remat) and one CFG sampling step of HunyuanCustom-audio (references,
Whisper windows, batch [uncond, cond]) compiled ahead of time for a TPU v5p-8 slice (4 chips) on this CPU
machine, with Ulysses sequence parallelism over 4 chips and splash attention inside ``shard_map``. Needs
``libtpu`` (``make setup`` installs the version matching jax under ``.venv/tpu-aot``); takes a few minutes.
The plan's defaults and the conditioning inputs are checked without compiling."""

import re
import subprocess
import sys

import pytest

from hcjax import configs
from hcjax.cli.aot import libtpu_path
from hcjax.training import aot_cond
from hcjax.training.aot import AotPlan


def _aot(*args, timeout=1500):
    return subprocess.run([sys.executable, "-m", "hcjax.cli", "aot", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(libtpu_path() is None, reason="libtpu not installed (make setup, or pip install .[tpu-aot])")
def test_train_step_compiles_for_tpu_v5p_with_splash():
    proc = _aot("--task", "train", "--topology", "v5p-8", "--size", "256x256x33", "--depth-double", "1",
                "--depth-single", "1", "--sequence", "4")
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "2304 tokens per sample" in out and "v5p:2x2x1, 4 chips" in out and "mesh sequence=4" in out
    assert "splash attention kernels in the program: yes" in out
    assert "\nfits" in out


def test_bad_request_stops_before_compiling():
    proc = _aot("--size", "720x1280x130", timeout=120)
    assert proc.returncode == 2
    assert "frames 130 must be 4k+1" in proc.stderr


@pytest.mark.skipif(libtpu_path() is None, reason="libtpu not installed (make setup, or pip install .[tpu-aot])")
def test_custom_audio_cfg_sample_step_compiles_for_tpu_v5p():
    # the model's 831 text tokens: the refiner's splash attention over 831 tokens takes one 896 block
    proc = _aot("--model", "hunyuan-custom-audio", "--task", "sample", "--topology", "v5p-8", "--size",
                "256x256x33", "--depth-double", "2", "--depth-single", "1", "--sequence", "4")
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "2560 tokens per sample (2304 video + 256 reference)" in out
    assert "1 reference frame(s), audio after double blocks 1, 831 text tokens" in out
    assert "batch 2 (1 per data-parallel group, CFG [uncond, cond] per sample)" in out and "mesh sequence=4" in out
    assert "splash attention kernels in the program: yes" in out
    assert float(re.search(r"peak ([0-9.]+) GiB", out).group(1)) > 0


def test_plan_defaults_follow_the_preset():
    audio = AotPlan(model="hunyuan-custom-audio", task="sample").resolved()
    assert (audio.ref_frames, audio.text_len, audio.cfg_batch) == (1, 831, True)
    t2v = AotPlan(task="sample").resolved()
    assert (t2v.ref_frames, t2v.text_len, t2v.cfg_batch) == (0, 256, False)
    train = AotPlan(model="hunyuan-custom", task="train", ref_frames=2).resolved()
    assert (train.ref_frames, train.text_len, train.cfg_batch) == (2, 256 + 2 * 575, False)
    with pytest.raises(ValueError, match="no identity references"):
        AotPlan(ref_frames=1).resolved()
    with pytest.raises(ValueError, match="cfg_batch is for the sample task"):
        AotPlan(task="train", cfg_batch=True)


def test_conditioning_inputs_and_reduced_audio_depth():
    import jax
    import jax.numpy as jnp

    latents = jax.ShapeDtypeStruct((2, 33, 90, 160, 16), jnp.float32)
    audio = configs.get("hunyuan-custom-audio").dit
    shapes = {k: v.shape for k, v in aot_cond.cond_inputs(audio, latents, 1).items()}
    assert shapes == {"ref_latents": (2, 1, 90, 160, 16), "audio_feats": (2, 129, 10, 5, 384)}
    editing = aot_cond.cond_inputs(configs.get("hunyuan-custom-editing").dit, latents, 0)
    assert {k: v.shape for k, v in editing.items()} == {"bg_latents": (2, 33, 90, 160, 32)}
    assert aot_cond.describe(aot_cond.fit_mechanisms(audio.replace(depth_double=4))) == (
        "audio after double blocks 1,3",)
    assert aot_cond.describe(aot_cond.fit_mechanisms(audio)) == ("audio after double blocks 1,3,5,7,9,11",)
    assert aot_cond.cond_flops(audio, 118800, 33) > 0
    assert aot_cond.cond_fn(audio, {"latents": latents}) is None
