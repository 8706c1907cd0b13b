"""HunyuanCustom sampling: the step-cache schedule, the compiled CFG loop against a plain Python loop of the
official pipeline, the pixel inputs (reference padding, editing masks), and ``hcjax sample`` end to end on the
tiny Custom presets with its input errors."""

from __future__ import annotations

import wave

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax import cli, configs
from hcjax.conditioning import CustomCond
from hcjax.io import read_video, write_mp4, write_png
from hcjax.models import HunyuanVideoDiT, random_params
from hcjax.pipelines import custom_media, text_inputs
from hcjax.pipelines.custom import denoise_fn
from hcjax.pipelines.request import SampleRequest
from hcjax.sampling import cached_steps, flow_sigmas
from tests.torch_reference import rel_l2


def test_step_cache_schedule_is_the_official_one():
    full = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 16, 19, 22, 23, 24, 25, 26, 27, 28, 29]
    np.testing.assert_array_equal(np.nonzero(~cached_steps(30))[0], full)
    assert not cached_steps(50).any() and not cached_steps(30, enabled=False).any()


def _python_loop(cfg, params, noise, text, negative, cond, request, cached):
    """The official denoising loop step by step: batch [uncond, cond] with zero audio in the first half."""
    dit = HunyuanVideoDiT(cfg)
    sigmas = flow_sigmas(request.steps, request.shift)
    states = jnp.concatenate([negative.states, text.states])
    mask, pooled = jnp.concatenate([negative.mask, text.mask]), jnp.concatenate([negative.pooled, text.pooled])
    both = CustomCond(ref_latents=jnp.concatenate([cond.ref_latents] * 2),
                      audio_feats=jnp.concatenate([jnp.zeros_like(cond.audio_feats), cond.audio_feats]),
                      audio_strength=cond.audio_strength)
    apply = jax.jit(lambda p, x, t, c: dit.apply({"params": p}, x, t, states, mask, pooled, None, both,
                                                 step_cache=c, return_cache=c is None))
    x, cache = noise, None
    for i in range(request.steps):
        t = jnp.full((2,), sigmas[i] * 1000.0, jnp.float32)
        xs = jnp.concatenate([x, x])
        if cached[i]:
            v = apply(params, xs, t, cache)
        else:
            v, cache = apply(params, xs, t, None)
        v_uncond, v_cond = jnp.split(v, 2)
        x = x + (v_uncond + request.cfg_scale * (v_cond - v_uncond)) * (sigmas[i + 1] - sigmas[i])
    return np.asarray(x)


@pytest.mark.parametrize("step_cache", [True, False])
def test_compiled_loop_equals_the_step_by_step_official_loop(step_cache):
    preset = configs.get("tiny-custom-audio")
    cfg = preset.dit
    request = SampleRequest.defaults(preset, frames=5, height=32, width=48)
    assert request.steps == 30 and request.shift == 13.0 and request.cfg_scale == 7.5
    params = random_params(cfg, seed=1)
    rng = np.random.default_rng(2)
    noise = jnp.asarray(rng.standard_normal((1, 2, 4, 6, 16)), jnp.float32)
    text = text_inputs.placeholder("a cat", cfg.text_dim, cfg.pooled_dim, length=6)
    negative = text_inputs.placeholder("", cfg.text_dim, cfg.pooled_dim, length=6)
    cond = CustomCond(ref_latents=jnp.asarray(rng.standard_normal((1, 1, 4, 6, 16)), jnp.float32),
                      audio_feats=jnp.asarray(rng.standard_normal((1, 5, 10, 5, 16)), jnp.float32),
                      audio_strength=np.float32(0.8))
    got = np.asarray(jax.jit(denoise_fn(cfg, request, step_cache))(params, noise, text, negative, cond))
    want = _python_loop(cfg, params, noise, text, negative, cond, request, cached_steps(30, step_cache))
    chex.assert_shape(got, (1, 2, 4, 6, 16))
    assert rel_l2(got, want) < 1e-5


def test_reference_pixels_pad_to_the_video_size_on_white():
    image = np.zeros((40, 20, 3), np.uint8)          # portrait into a landscape video: white bars left / right
    out = custom_media.reference_pixels([image], 32, 48)
    chex.assert_shape(out, (1, 32, 48, 3))
    assert np.all(out[0, :, :16] == 1.0) and np.all(out[0, :, -16:] == 1.0)
    assert np.all(out[0, :, 16:32] == -1.0)


def test_editing_mask_threshold_dilation_and_masked_video():
    np.testing.assert_array_equal(custom_media.ellipse_kernel(5).astype(int),
                                  [[0, 0, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0]])
    mask = np.zeros((1, 20, 20, 3), np.uint8)
    mask[0, 8:12, 8:12] = 200                        # above 127.5 -> masked
    mask[0, 0, 0] = 100                              # below -> kept
    plain = custom_media.binary_mask(mask)
    assert set(np.unique(plain)) == {0, 255} and plain.sum() == 16 * 255
    grown = custom_media.binary_mask(mask, expand_scale=3)   # cross kernel, 3 iterations: 3 pixels each way
    assert grown[0, 5, 8] == 255 and grown[0, 4, 8] == 0 and grown[0, 8, 5] == 255
    assert custom_media.binary_mask(mask, expand_scale=-3).sum() == 0   # eroded away
    video = np.full((1, 20, 20, 3), 200, np.uint8)
    masked, m = custom_media.editing_pixels(video, mask)
    assert np.all(masked[0, 8:12, 8:12] == -1.0) and np.allclose(masked[0, 0, 0], 200 / 255 * 2 - 1)
    assert np.all(m[0, 8:12, 8:12] == 1.0) and np.all(m[0, 0, 0] == -1.0)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom_media")
    image = np.zeros((120, 90, 3), np.uint8)
    image[20:100, 10:80] = (200, 50, 30)
    write_png(root / "ref1.png", image)
    write_png(root / "ref2.png", np.full((60, 160, 3), 90, np.uint8))
    rng = np.random.default_rng(0)
    write_mp4(root / "src.mp4", rng.uniform(0, 255, (10, 64, 96, 3)).astype(np.uint8), fps=25)
    mask = np.zeros((12, 64, 96, 3), np.uint8)
    mask[:, 16:48, 24:72] = 255
    write_mp4(root / "mask.mp4", mask, fps=25)
    write_mp4(root / "mask_small.mp4", mask[:, :, :80], fps=25)
    for name, seconds in (("long.wav", 0.5), ("short.wav", 0.2)):
        samples = (np.sin(np.arange(int(16000 * seconds)) * 0.1) * 8000).astype(np.int16)
        with wave.open(str(root / name), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(samples.tobytes())
    return root


def _sample(argv, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    code = cli.main(["sample", "--prompt", "a subject", "--steps", "3", "--out", str(out), "--no-progress", *argv])
    captured = capsys.readouterr()
    return code, out, captured.out + captured.err


@pytest.mark.parametrize("args,shape", [
    (["--model", "tiny-custom", "--ref-image", "ref1.png"], (9, 64, 96, 3)),
    (["--model", "tiny-custom", "--ref-image", "ref1.png", "--ref-image", "ref2.png", "--ref-name", "man",
      "--ref-name", "dog"], (9, 64, 96, 3)),
    (["--model", "tiny-custom-audio", "--ref-image", "ref1.png", "--audio", "long.wav", "--audio-strength", "0.8"],
     (9, 64, 96, 3)),
    (["--model", "tiny-custom-editing", "--ref-image", "ref1.png", "--video", "src.mp4", "--mask", "mask.mp4",
      "--expand-scale", "3"], (9, 64, 96, 3)),   # 10 frames in common -> 9 (4k+1), the video's size
])
def test_sample_custom_writes_mp4(args, shape, media, tmp_path, capsys):
    args = [str(media / a) if a.endswith((".png", ".wav", ".mp4")) else a for a in args]
    code, out, log = _sample(args, tmp_path, capsys)
    assert code == 0, log
    video = read_video(out)
    assert video.shape == shape and video.std() > 1


@pytest.mark.parametrize("args,message", [
    (["--model", "tiny-custom-audio", "--ref-image", "ref1.png", "--audio", "short.wav"],
     "--audio covers 5 video frames"),
    (["--model", "tiny-custom-editing", "--ref-image", "ref1.png", "--video", "src.mp4", "--mask", "mask_small.mp4"],
     "--mask is 64x80 but --video is 64x96"),
    (["--model", "tiny-custom", "--ref-image", "ref1.png", "--ref-image", "ref2.png", "--ref-name", "man"],
     "2 reference image(s) but 1 --ref-name"),
    (["--model", "tiny-custom"], "give --ref-image"),
    (["--model", "tiny", "--ref-image", "ref1.png"], "tiny takes no --ref-image"),
])
def test_custom_input_errors_are_one_message_and_no_file(args, message, media, tmp_path, capsys):
    args = [str(media / a) if a.endswith((".png", ".wav", ".mp4")) else a for a in args]
    code, out, log = _sample(args, tmp_path, capsys)
    assert code != 0 and message in log and not out.exists()
    assert "Traceback" not in log
