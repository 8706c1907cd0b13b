"""HuMo sampling: ``hcjax sample`` on ``tiny-humo`` end to end (with and without reference images, the face mask
of ``--mask-out`` as .npy and .png, every input problem one message and no file), the pipeline's guided velocity
against three explicit DiT calls combined by HuMo's time-adaptive formula, and the reference preprocessing
(LANCZOS fit, centred on white)."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from hcjax import cli, configs
from hcjax.conditioning import HumoCond
from hcjax.io import read_image, read_video, write_png
from hcjax.models import HunyuanVideoDiT, random_params
from hcjax.pipelines import SampleRequest, humo, text_inputs
from hcjax.pipelines.humo_media import mask_strip, reference_canvas, reference_pixels
from tests.media_helpers import sine_wav


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("humo_media")
    tall = np.zeros((120, 90, 3), np.uint8)
    tall[10:110, 5:85] = (200, 120, 90)
    write_png(root / "tall.png", tall)
    write_png(root / "wide.png", np.full((90, 160, 3), 60, np.uint8))
    sine_wav(root / "half.wav", 0.5)     # 12 frames at 25 fps: covers 9
    sine_wav(root / "short.wav", 0.2)    # 5 frames
    return root


def _sample(argv, media, tmp_path, capsys):
    argv = [str(media / a) if a.endswith((".png", ".wav")) and "/" not in a else a for a in argv]
    out = tmp_path / "out.mp4"
    code = cli.main(["sample", "--prompt", "a man talks", "--steps", "2", "--out", str(out), "--no-progress", *argv])
    captured = capsys.readouterr()
    return code, out, captured.out + captured.err


def _spy(monkeypatch):
    seen = {}
    real = humo.generate_humo

    def spy(*args, **kw):
        seen.update(inputs=args[6], cond=kw["cond"], audio_scale=kw["audio_scale"])
        return real(*args, **kw)

    monkeypatch.setattr(humo, "generate_humo", spy)
    return seen


def test_two_references_and_a_npy_face_mask(media, tmp_path, capsys, monkeypatch):
    seen = _spy(monkeypatch)
    mask = tmp_path / "mask.npy"
    code, out, log = _sample(["--task", "humo", "--model", "tiny-humo", "--ref-image", "tall.png", "--ref-image",
                              "wide.png", "--audio", "half.wav", "--audio-scale", "4.5", "--mask-out", str(mask)],
                             media, tmp_path, capsys)
    assert code == 0, log
    video = read_video(out)
    assert video.shape == (9, 64, 64, 3) and video.std() > 1
    assert (tmp_path / "out.png").exists() and "9 frames 64x64 at 25 fps" in log
    probs = np.load(mask)
    assert probs.shape == (3, 8, 8) and probs.dtype == np.float32 and 0 <= probs.min() and probs.max() <= 1
    refs, cond = seen["inputs"].references, seen["cond"]
    want = reference_pixels([read_image(media / "tall.png"), read_image(media / "wide.png")], 64, 64)
    np.testing.assert_array_equal(refs, want)
    assert cond.ref_latents.shape == (1, 2, 8, 8, 16) and np.abs(cond.ref_latents).max() > 0
    assert cond.audio_feats.shape == (1, 3 + 2, 8, 5, 16) and not np.any(cond.audio_feats[0, 3:])
    assert seen["audio_scale"] == 4.5


def test_text_and_audio_only_with_a_png_mask_strip(media, tmp_path, capsys, monkeypatch):
    """No --ref-image: one zero reference frame; the task comes from the model."""
    seen = _spy(monkeypatch)
    mask = tmp_path / "mask.png"
    code, out, log = _sample(["--model", "tiny-humo", "--audio", "half.wav", "--mask-out", str(mask)], media,
                             tmp_path, capsys)
    assert code == 0, log
    assert read_video(out).shape == (9, 64, 64, 3)
    assert read_image(mask).shape == (64, 3 * 64 + 2 * 2, 3)
    cond = seen["cond"]
    assert seen["inputs"].references is None and seen["audio_scale"] == humo.AUDIO_SCALE
    assert cond.ref_latents.shape == (1, 1, 8, 8, 16) and not np.any(cond.ref_latents)
    assert cond.audio_feats.shape == (1, 4, 8, 5, 16) and np.any(cond.audio_feats[0, :3])


@pytest.mark.parametrize("args,message", [
    (["--frames", "10"], "frames 10 is not 4k+1; use e.g. 9 or 13"),
    (["--height", "72"], "height 72 must be a positive multiple of 16; use 64"),
    (["--ref-image", "missing.png"], "--ref-image: no image file at"),
    (["--ref-image", "half.wav"], "--ref-image: cannot read image"),
    (["--audio", "missing.wav"], "--audio: no audio file at"),
    (["--audio", "short.wav"], "give a longer audio or --frames 5"),
    (["--mask-out", "mask.txt"], "must end in .npy (probabilities) or .png"),
    (["--mask-out", "/no/such/dir/m.npy"], "does not exist; create"),
    (["--image", "tall.png"], "give reference images as --ref-image"),
    (["--audio2", "half.wav"], "takes no --audio2"),
    (["--guidance", "6"], "drop --guidance"),
    (["--fps", "24"], "drop --fps"),
    (["--ref-name", "man"], "takes no --ref-name"),
    (["--task", "avatar"], "--task avatar needs a avatar model"),
])
def test_input_errors_are_one_message_and_no_file(args, message, media, tmp_path, capsys):
    mask = tmp_path / "m.npy"
    argv = ["--model", "tiny-humo", "--audio", "half.wav", "--mask-out", str(mask), *args]
    code, out, log = _sample(argv, media, tmp_path, capsys)
    assert code == 2 and message in log and not out.exists() and not mask.exists(), log
    assert "Traceback" not in log and log.count("error:") == 1


def test_missing_audio_and_other_models(media, tmp_path, capsys):
    code, out, log = _sample(["--model", "tiny-humo"], media, tmp_path, capsys)
    assert code == 2 and "give --audio PATH" in log and not out.exists()
    code, out, log = _sample(["--task", "humo", "--model", "tiny", "--audio", "half.wav"], media, tmp_path, capsys)
    assert code == 2 and "--model humo (random weights: tiny-humo)" in log and not out.exists()
    code, out, log = _sample(["--model", "tiny", "--mask-out", str(tmp_path / "m.npy")], media, tmp_path, capsys)
    assert code == 2 and "tiny takes no --mask-out; use a HuMo model" in log


# ---------------------------------------------------------------------------------------------------------------
# the guided velocity


@pytest.fixture(scope="module")
def tiny():
    p = configs.get("tiny-humo")
    a = p.mechanism("audio")
    keys = jax.random.split(jax.random.key(7), 3)
    d = p.dit
    return dict(preset=p, params=random_params(d, 3),
                x=jax.random.normal(keys[0], (1, 3, 8, 8, d.in_channels)),
                ref=jax.random.normal(keys[1], (1, 2, 8, 8, d.in_channels)),
                audio=jax.random.normal(keys[2], (1, 3 + 2, a.window, a.groups, a.channels)),
                text=text_inputs.placeholder("a man talks", d.text_dim, d.pooled_dim),
                negative=text_inputs.placeholder("bad hands", d.text_dim, d.pooled_dim))


def _explicit(t):
    """Three separate DiT calls per case: ``e(text, ref, audio)``."""
    dit = HunyuanVideoDiT(t["preset"].dit)
    apply = jax.jit(lambda p, x, ts, s, m, pooled, c: dit.apply({"params": p}, x, ts, s, m, pooled, None, c))

    def e(timestep, text, ref, audio):
        ts = jnp.full((1,), timestep, jnp.float32)
        return np.asarray(apply(t["params"], t["x"], ts, text.states, text.mask, text.pooled, HumoCond(ref, audio)))

    return e


@pytest.mark.parametrize("has_image", [True, False])
def test_velocity_is_the_time_adaptive_combination_of_three_dit_calls(tiny, has_image):
    p, t = tiny["preset"], tiny
    request = SampleRequest.defaults(p)
    guidance = humo.humo_guidance(request, has_image)
    assert guidance.text_scale == 5.0 and guidance.audio_scale == 5.5
    assert guidance.switch == (980.0 if has_image else None)
    ref = t["ref"] if has_image else jnp.zeros_like(t["ref"][:, :1])
    audio = t["audio"] if has_image else t["audio"][:, :4]
    cond = HumoCond(ref, audio)
    velocity = jax.jit(humo.velocity_fn(p.dit, guidance))
    e = _explicit(t)
    pos, neg, zero_a, zero_i = t["text"], t["negative"], jnp.zeros_like(audio), jnp.zeros_like(ref)
    for timestep, s_t in ((999.0, 5.0), (500.0, 3.0 if has_image else 5.0)):
        got = np.asarray(velocity(t["params"], t["x"], jnp.full((1,), timestep), pos, neg, cond))
        full, no_audio = e(timestep, pos, ref, audio), e(timestep, pos, ref, zero_a)
        negative = e(timestep, neg, ref if timestep > 980 else zero_i, zero_a)
        want = negative + s_t * (no_audio - negative) + 5.5 * (full - no_audio)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert np.abs(full - no_audio).max() > 1e-3 and np.abs(no_audio - negative).max() > 1e-3
    if has_image:   # before the switch the image is in the negative: the two negatives differ
        assert np.abs(e(999.0, neg, ref, zero_a) - e(999.0, neg, zero_i, zero_a)).max() > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# reference preprocessing


def test_reference_canvas_fits_with_lanczos_centred_on_white():
    rng = np.random.default_rng(0)
    tall = rng.integers(0, 200, (120, 90, 3), dtype=np.uint8)         # height limits: 64 x 48, 8 px each side
    out = reference_canvas(tall, 64, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out[:, :8] == 255).all() and (out[:, 56:] == 255).all()
    want = np.asarray(Image.fromarray(tall).resize((48, 64), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(out[:, 8:56], want)
    wide = np.full((90, 160, 3), 40, np.uint8)                          # width limits: 36 x 64 -> rows 14..49
    out = reference_canvas(wide, 64, 64)
    assert (out[:14] == 255).all() and (out[50:] == 255).all() and (out[14:50] == 40).all()
    odd = np.full((10, 30, 3), 0, np.uint8)                             # 64 x 48 target: 16 x 48 -> rows 24..39
    out = reference_canvas(odd, 64, 48)
    assert (out[24:40] == 0).all() and (out[:24] == 255).all() and (out[40:] == 255).all()
    same = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)            # already the size: unchanged
    np.testing.assert_array_equal(reference_canvas(same, 64, 96), same)
    pixels = reference_pixels([tall, wide], 64, 64)
    assert pixels.shape == (2, 64, 64, 3) and pixels.dtype == np.float32
    assert pixels[0, 0, 0, 0] == 1.0 and pixels[1, 20, 20, 0] == np.float32(40 / 255 * 2 - 1)


def test_mask_strip_layout():
    probs = np.stack([np.zeros((2, 3)), np.ones((2, 3))]).astype(np.float32)
    strip = mask_strip(probs, scale=4)
    assert strip.shape == (8, 2 * 12 + 2, 3)
    assert (strip[:, :12] == 0).all() and (strip[:, 12:14] == 255).all() and (strip[:, 14:] == 255).all()


# ---------------------------------------------------------------------------------------------------------------
# a converted model directory


@pytest.fixture(scope="module")
def humo_dir(tmp_path_factory):
    """tiny-humo as an ``hcjax convert`` directory, without and with its (random) Whisper; text embeddings."""
    from hcjax import convert
    from hcjax.convert.audio_encoder_dir import save_audio_encoder

    root, p = tmp_path_factory.mktemp("humo_dir"), configs.get("tiny-humo")
    for name in ("bare", "model"):
        convert.save_model_dir(root / name, "tiny-humo", dit_params=random_params(p.dit, 1),
                               vae_params=random_params(p.vae, 1))
    save_audio_encoder(root / "model", p.audio_encoder, random_params(p.audio_encoder, 2))
    d = p.dit
    emb = text_inputs.placeholder("a man talks", d.text_dim, d.pooled_dim)
    text_inputs.save(root / "text.safetensors", emb)
    text_inputs.save(root / "both.safetensors", emb, text_inputs.placeholder("bad", d.text_dim, d.pooled_dim))
    return root


def test_model_dir_needs_its_encoders_then_samples(humo_dir, media, tmp_path, capsys):
    cases = [("bare", [], "no audio encoder: add Whisper (whisper-large-v3) with tools/convert_whisper.py"),
             ("model", [], "no text encoders: add them with tools/convert_text_encoders.py, or pass --text-embeds"),
             ("model", ["--text-embeds", str(humo_dir / "text.safetensors")], "needs negative_text_states")]
    for name, extra, message in cases:
        code, out, log = _sample(["--model", str(humo_dir / name), "--audio", "half.wav", *extra], media, tmp_path,
                                 capsys)
        assert code == 2 and message in log and not out.exists(), log
    code, out, log = _sample(["--model", str(humo_dir / "model"), "--audio", "half.wav", "--ref-image", "tall.png",
                              "--text-embeds", str(humo_dir / "both.safetensors")], media, tmp_path, capsys)
    assert code == 0, log
    assert read_video(out).shape == (9, 64, 64, 3)
