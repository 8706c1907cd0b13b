"""tools/precompute_dataset.py for HuMo: a ``tiny-humo`` model directory (random VAE, text encoders and 4-layer
Whisper) makes a dataset with HuMo's keys that training accepts; the references are the sampler's encoding (the
image fitted on white, the VAE posterior mean), the audio HuMo's Whisper windows, the text the plain caption; a
Whisper whose hidden states do not group in 4 + 1, and audio shorter than its clip, are refused before any work."""

from __future__ import annotations

import shutil
import wave

import chex
import numpy as np
import pytest

from hcjax import configs, convert
from hcjax.conditioning.audio_features import audio_condition
from hcjax.convert.audio_encoder_dir import save_audio_encoder
from hcjax.io import read_image, write_png
from hcjax.models import random_params
from hcjax.pipelines import SampleRequest, humo
from hcjax.pipelines.humo_media import reference_pixels
from hcjax.training.cond_inputs import conditioning_inputs, record_extras
from hcjax.training.data import check_dataset, open_dataset, read_metadata
from tests.test_training_custom import _custom_clips, precompute_dataset

PRESET = "tiny-humo"
pytest.importorskip("transformers")   # the text encoders' tokenizers


def _model_dir(path, whisper_layers: int = 4):
    """A ``tiny-humo`` model directory: VAE (seed 0), tiny Llama + CLIP text encoders, Whisper (seed 2)."""
    from hcjax.convert.text_encoder_dir import save_text_encoders
    from hcjax.models.text.clip import CLIPTextConfig
    from hcjax.models.text.llama import LlamaConfig
    from tests.test_encode_text_tool import _tokenizer

    p = configs.get(PRESET)
    convert.save_model_dir(path, PRESET, vae_params=random_params(p.vae, 0))
    words = "clip 0 1".split()
    llm = LlamaConfig(vocab_size=16, hidden_size=p.dit.text_dim, intermediate_size=48, num_layers=2, num_heads=4,
                      num_kv_heads=2, dtype="float32", param_dtype="float32")
    clip = CLIPTextConfig(vocab_size=16, hidden_size=p.dit.pooled_dim, intermediate_size=32, num_layers=2,
                          num_heads=2, eos_token_id=2)
    save_text_encoders(path, llm, random_params(llm, 2), clip, random_params(clip, 3), _tokenizer(words),
                       _tokenizer(words, bos=False))
    whisper = p.audio_encoder.replace(encoder_layers=whisper_layers)
    save_audio_encoder(path, whisper, random_params(whisper, 2))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """``(clips root, model directory)``: two 5-frame 32x48 clips with a subject image, 1 s of audio and a face mask
    (pixel rows 8..23, columns 12..35) each."""
    root = tmp_path_factory.mktemp("humo_precompute")
    src = _custom_clips(root / "in")
    (src / "faces").mkdir()
    mask = np.zeros((32, 48, 3), np.uint8)
    mask[8:24, 12:36] = 255
    for i in range(2):
        write_png(src / "faces" / f"clip{i}.png", mask)
    return src, _model_dir(root / "model")


def _argv(src, model, out, audio="audio") -> list[str]:
    return ["--model", str(model), "--out", str(out), "--src", str(src / "videos"), "--buckets", "32x48", "--frames",
            "5", "--text-len", "8", "--ref-images", str(src / "refs"), "--audio", str(src / audio), "--face-masks",
            str(src / "faces")]


def test_precompute_makes_the_humo_keys(inputs, tmp_path):
    from hcjax.convert.text_encoder_dir import load_text_encoders

    src, model = inputs
    p = configs.get(PRESET)
    assert precompute_dataset.main(_argv(src, model, tmp_path / "d")) == 0
    source = open_dataset(tmp_path / "d")
    assert source.spec.extra == record_extras(p)
    check_dataset(source, p.dit, text_len=8)
    conditioning_inputs(p).check_source(source)
    record = source[1]
    chex.assert_shape([record["latents"], record["ref_latents"], record["audio_feats"], record["face_mask"]],
                      [(2, 4, 6, 16), (1, 4, 6, 16), (2, 8, 5, 16), (1, 4, 6)])
    assert record["face_mask"][0, 0, 0] == 0 and record["face_mask"][0, 1, 2] == 1 == record["face_mask"][0, 2, 3]
    # the reference: the sampler's encoding of the image fitted on white (posterior mean, scaled)
    request = SampleRequest.defaults(p, frames=5, height=32, width=48)
    refs = reference_pixels([read_image(src / "refs" / "clip1.png")], 32, 48)
    cond = humo.encode_conditions(p, random_params(p.vae, 0), humo.HumoInputs(np.zeros((2, 8, 5, 16)), refs),
                                  request)
    np.testing.assert_allclose(record["ref_latents"], np.asarray(cond.ref_latents)[0], rtol=1e-5, atol=1e-5)
    # the audio: HuMo's windows of the model directory's Whisper
    want = audio_condition(src / "audio" / "clip1.wav", 5, p.audio_encoder, random_params(p.audio_encoder, 2),
                           task="humo", num_ref=0)
    np.testing.assert_allclose(record["audio_feats"], want, rtol=1e-5, atol=1e-5)
    assert np.abs(record["audio_feats"]).max() > 0
    # the text: the plain caption through the T2V encoders
    text = load_text_encoders(model).encode(["clip 1"], 5)
    np.testing.assert_array_equal(record["text_mask"], np.asarray(text.mask)[0, :8])
    np.testing.assert_allclose(record["text_pooled"], np.asarray(text.pooled)[0], rtol=1e-5, atol=1e-6)
    assert read_metadata(tmp_path / "d")["conditions"]["ref_latents"] == "posterior mean, fitted on white"


def test_precompute_refuses_bad_humo_inputs_before_work(inputs, tmp_path, capsys, monkeypatch):
    src, model = inputs
    bad = tmp_path / "bad"
    shutil.copytree(model, bad, ignore=shutil.ignore_patterns("audio_encoder"))
    save_audio_encoder(bad, configs.get(PRESET).audio_encoder.replace(encoder_layers=3),
                       random_params(configs.get(PRESET).audio_encoder.replace(encoder_layers=3), 2))
    monkeypatch.setattr(precompute_dataset, "find_clips", lambda *a: pytest.fail("read the clips"))
    assert precompute_dataset.main(_argv(src, bad, tmp_path / "x")) == 2
    assert ("HuMo groups the audio encoder's hidden states in 4 + 1; a Whisper with 3 layers does not fit: "
            "convert whisper-large-v3" in capsys.readouterr().err)
    monkeypatch.undo()
    short = src / "short"
    short.mkdir()
    for i, seconds in enumerate((1.0, 0.1)):         # clip 1: 2 of its 5 frames
        with wave.open(str(short / f"clip{i}.wav"), "wb") as f:
            f.setnchannels(1), f.setsampwidth(2), f.setframerate(16000)
            f.writeframes(np.zeros(int(16000 * seconds), np.int16).tobytes())
    monkeypatch.setattr(precompute_dataset, "load_models", lambda *a: pytest.fail("loaded the models"))
    assert precompute_dataset.main(_argv(src, model, tmp_path / "x", audio="short")) == 2
    err = capsys.readouterr().err
    assert "audio clip1.wav covers 2 video frames (0.10 s at 25 fps), fewer than the 5 of clip1.mp4" in err
    assert "clip0" not in err and not (tmp_path / "x").exists()
