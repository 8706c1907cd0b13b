"""Encoders stored in a model directory: LLaVA's image path with the text encoders (``text_encoders/vision``,
``/projector``, the ``"llava"`` config entry) and the Whisper encoder (``audio_encoder/``), converted by the tools
from tiny random ``transformers`` models saved with ``save_pretrained``: exact round trip, the merge facts,
text-only directories, strict checks on damaged or mismatching trees, refusal to overwrite, and the loaded
Whisper encoder's outputs against ``transformers``."""

import dataclasses
import json
import os
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch

from hcjax import configs, convert
from hcjax.convert import ModelDirError
from hcjax.convert.audio_encoder_dir import has_audio_encoder, load_audio_encoder, save_audio_encoder
from hcjax.convert.clip import clip_text_from_torch, clip_vision_from_torch, llava_projector_from_torch
from hcjax.convert.llama import llama_from_torch
from hcjax.convert.llava import llava_image_path_from_torch
from hcjax.convert.text_encoder_dir import (has_llava_image_path, has_text_encoders, load_llava_image_path,
                                            load_text_encoders, save_text_encoders)
from hcjax.convert.whisper import whisper_encoder_from_torch
from hcjax.models import random_params
from hcjax.models.audio.whisper import WhisperEncoder, WhisperEncoderConfig
from hcjax.models.text.clip import CLIPVisionConfig
from hcjax.models.text.llava import LlavaProjector
from tests.test_model_dir import assert_trees_equal
from tests.torch_reference import rel_l2

transformers = pytest.importorskip("transformers")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import convert_text_encoders  # noqa: E402
import convert_whisper  # noqa: E402
from tests.test_encode_text_tool import _tokenizer  # noqa: E402
from tests.test_llava_text import _perturbed  # noqa: E402  (every param off its init)

WORDS = "<image> a fox runs in the snow".split()
IMAGE, CONFIG_PAD = 4, 0          # "<image>" is the first word after the 4 special tokens; "<pad>" is 0
WHISPER = WhisperEncoderConfig(num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=2,
                               encoder_ffn_dim=64, max_source_positions=20)


def _llava():
    text = transformers.LlamaConfig(vocab_size=len(WORDS) + 8, hidden_size=32, intermediate_size=48,
                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                    max_position_embeddings=512)
    vision = transformers.CLIPVisionConfig(image_size=28, patch_size=7, hidden_size=24, intermediate_size=40,
                                           num_hidden_layers=3, num_attention_heads=2)
    return _perturbed(transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=IMAGE, pad_token_id=CONFIG_PAD)), 1)


def _whisper():
    return _perturbed(transformers.WhisperModel(transformers.WhisperConfig(
        num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
        max_source_positions=20, vocab_size=64, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)), 2)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """``(root, llava, clip, whisper)``: tiny models saved as local folders under ``root``."""
    root = tmp_path_factory.mktemp("sources")
    torch.manual_seed(0)
    llava, whisper = _llava(), _whisper()
    clip = _perturbed(transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(WORDS) + 8, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, eos_token_id=2)), 3)
    for model, tok, name in ((llava, _tokenizer(WORDS), "llava"), (clip, _tokenizer(WORDS, bos=False), "clip")):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    whisper.save_pretrained(root / "whisper")
    transformers.WhisperFeatureExtractor(feature_size=16).save_pretrained(root / "whisper")
    return root, llava, clip, whisper


def _model_dir(path):
    convert.save_model_dir(path, "tiny", dit_params=random_params(configs.get("tiny").dit, 1))
    return path


@pytest.fixture(scope="module")
def model(sources, tmp_path_factory):
    """A tiny model directory holding the text encoders with LLaVA's image path, and the Whisper encoder."""
    root = sources[0]
    path = _model_dir(tmp_path_factory.mktemp("model") / "m")
    convert_text_encoders.convert_folders(str(root / "llava"), str(root / "clip"), str(path), dtype="float32")
    convert_whisper.convert_folder(str(root / "whisper"), str(path))
    return path


def _copy(model, tmp_path):
    return shutil.copytree(model, tmp_path / "copy")


def _overwrite(checkpoint, tree):
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(checkpoint, tree, force=True)


# --------------------------------------------------------------------------------------------- text + LLaVA


def test_text_encoders_and_image_path_round_trip(sources, model):
    _, llava, clip, _ = sources
    sd = llava.state_dict()
    enc = load_text_encoders(model)
    assert_trees_equal(enc.llm_params, llama_from_torch(sd, enc.llm_cfg))
    assert_trees_equal(enc.clip_params, clip_text_from_torch(clip.state_dict(), enc.clip_cfg))
    assert has_llava_image_path(model)
    path = load_llava_image_path(model)
    assert path.vision_cfg == CLIPVisionConfig.from_transformers(llava.config.vision_config)
    want = LlavaProjector(text_hidden=32, vision_hidden=24)
    assert [getattr(path.projector, f) for f in ("text_hidden", "vision_hidden", "bias", "dtype")] == \
        [want.text_hidden, want.vision_hidden, want.bias, want.dtype]
    assert_trees_equal(path.vision_params, clip_vision_from_torch(sd, path.vision_cfg))
    assert_trees_equal(path.projector_params, llava_projector_from_torch(sd, want))
    assert (path.image_token_index, path.config_pad_token_id, path.feature_layer, path.select_strategy) == \
        (IMAGE, CONFIG_PAD, -2, "default")
    assert enc.llm_tokenizer.convert_tokens_to_ids("<image>") == IMAGE


def test_text_only_dir_still_loads(sources, tmp_path, monkeypatch):
    root = sources[0]
    path = _model_dir(tmp_path / "m")
    monkeypatch.setattr(sys, "argv", ["convert_text_encoders.py", "--llm", str(root / "llava"), "--clip",
                                      str(root / "clip"), "--model-dir", str(path), "--dtype", "float32",
                                      "--no-image-path"])
    convert_text_encoders.main()
    assert has_text_encoders(path) and not has_llava_image_path(path)
    assert not (path / "text_encoders" / "vision").exists()
    enc = load_text_encoders(path)
    assert_trees_equal(enc.llm_params, llama_from_torch(sources[1].state_dict(), enc.llm_cfg))
    with pytest.raises(ModelDirError, match="--llm a full LLaVA folder"):
        load_llava_image_path(path)
    with pytest.raises(ModelDirError, match="convert_whisper.py"):
        load_audio_encoder(path)
    assert not has_audio_encoder(path)


def test_mismatching_image_path_writes_nothing(sources, model, tmp_path):
    path = _model_dir(tmp_path / "m")
    enc, image = load_text_encoders(model), load_llava_image_path(model)
    wide = dataclasses.replace(image, projector=LlavaProjector(text_hidden=48, vision_hidden=24))
    with pytest.raises(ModelDirError, match="projector's output 48") as e:
        save_text_encoders(path, enc.llm_cfg, enc.llm_params, enc.clip_cfg, enc.clip_params, enc.llm_tokenizer,
                           enc.clip_tokenizer, image_path=wide)
    assert "projector linear_1/kernel" in str(e.value)
    assert sorted(p.name for p in path.iterdir()) == ["dit", "hcjax_model.json"]


def test_damaged_image_path(model, tmp_path):
    path = _copy(model, tmp_path)
    stored = load_llava_image_path(path).projector_params
    bad = jax.tree.map(np.asarray, stored) | {"linear_2": {"kernel": np.zeros((32, 8), np.float32),
                                                           "bias": np.asarray(stored["linear_2"]["bias"])}}
    _overwrite(path / "text_encoders" / "projector", bad)
    with pytest.raises(ModelDirError, match=r"linear_2/kernel.*convert_text_encoders\.py"):
        load_llava_image_path(path)
    shutil.rmtree(path / "text_encoders" / "vision")
    with pytest.raises(ModelDirError, match=r"vision: unreadable Orbax checkpoint.*convert_text_encoders\.py"):
        load_llava_image_path(path)
    load_text_encoders(path)   # the text encoders themselves are intact


def test_llava_entry_mismatching_the_params(model, tmp_path):
    path = _copy(model, tmp_path)
    file = path / "text_encoders" / "config.json"
    config = json.loads(file.read_text())
    config["llava"]["vision"]["num_layers"] = 2
    file.write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match=r"vision: params differ.*encoder/layers"):
        load_llava_image_path(path)
    del config["llava"]["image_token_index"]
    file.write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="bad 'llava' entry"):
        load_llava_image_path(path)


def test_writing_twice_refuses(sources, model):
    root = sources[0]
    before = sorted(p.name for p in model.iterdir())
    with pytest.raises(ModelDirError, match="text_encoders exists already; delete it"):
        convert_text_encoders.convert_folders(str(root / "llava"), str(root / "clip"), str(model), "float32")
    with pytest.raises(ModelDirError, match="audio_encoder exists already; delete it"):
        convert_whisper.convert_folder(str(root / "whisper"), str(model))
    assert sorted(p.name for p in model.iterdir()) == before == ["audio_encoder", "dit", "hcjax_model.json",
                                                                 "text_encoders"]


def test_image_path_from_the_folder_equals_the_in_memory_model(sources):
    root, llava, _, _ = sources
    got = llava_image_path_from_torch(convert.load_pretrained_weights(root / "llava"), llava.config)
    assert_trees_equal(got.vision_params, clip_vision_from_torch(llava.state_dict(), got.vision_cfg))


# --------------------------------------------------------------------------------------------- Whisper


def test_whisper_round_trip_and_outputs(sources, model):
    whisper = sources[3]
    cfg, params = load_audio_encoder(model)
    assert has_audio_encoder(model) and cfg == WHISPER
    assert_trees_equal(params, whisper_encoder_from_torch(whisper.state_dict(), cfg))
    extractor = transformers.WhisperFeatureExtractor.from_pretrained(model / "audio_encoder" / "feature_extractor")
    assert extractor.feature_size == 16
    features = np.random.default_rng(0).standard_normal((2, cfg.num_frames, cfg.num_mel_bins)).astype(np.float32)
    got = WhisperEncoder(cfg).apply({"params": params}, features)
    with torch.inference_mode():
        want = whisper.encoder(torch.from_numpy(features).transpose(1, 2), output_hidden_states=True)
    assert len(got["hidden_states"]) == len(want.hidden_states) == 3
    for g, w in zip(got["hidden_states"], want.hidden_states):
        assert rel_l2(g, w.numpy()) < 1e-5
    assert rel_l2(got["last_hidden_state"], want.last_hidden_state.numpy()) < 1e-5


def test_damaged_whisper(model, tmp_path):
    path = _copy(model, tmp_path)
    _, params = load_audio_encoder(path)
    bad = jax.tree.map(np.asarray, params)
    bad["conv1"] = {**bad["conv1"], "kernel": bad["conv1"]["kernel"].astype(np.float16)}
    _overwrite(path / "audio_encoder" / "whisper", bad)
    with pytest.raises(ModelDirError, match=r"conv1/kernel.*float16.*convert_whisper\.py"):
        load_audio_encoder(path)
    (path / "audio_encoder" / "config.json").write_text("{not json")
    with pytest.raises(ModelDirError, match=r"bad audio encoder config.*convert_whisper\.py"):
        load_audio_encoder(path)


def test_mismatching_whisper_writes_nothing(model, tmp_path):
    path = _model_dir(tmp_path / "m")
    cfg, params = load_audio_encoder(model)
    with pytest.raises(ModelDirError, match=r"whisper conv1/bias: has \(32,\) float32, .* \(64,\)"):
        save_audio_encoder(path, cfg.replace(d_model=64), params)
    with pytest.raises(ModelDirError, match="makes 80 mel bins"):
        save_audio_encoder(path, cfg, params, transformers.WhisperFeatureExtractor())
    assert sorted(p.name for p in path.iterdir()) == ["dit", "hcjax_model.json"]


def test_i2v_sampling_needs_the_image_path(sources, tmp_path, capsys):
    """An image-to-video model encodes its prompt with the image: text-only encoders are refused up front."""
    from hcjax import cli
    from hcjax.io import write_png

    root, preset = sources[0], configs.get("tiny-i2v")
    path = tmp_path / "m"
    convert.save_model_dir(path, "tiny-i2v", dit_params=random_params(preset.dit, 1),
                           vae_params=random_params(preset.vae, 1))
    convert_text_encoders.convert_folders(str(root / "llava"), str(root / "clip"), str(path), dtype="float32",
                                          image_path=False)
    write_png(tmp_path / "first.png", np.full((32, 48, 3), 128, np.uint8))
    out = tmp_path / "x.mp4"
    code = cli.main(["sample", "--model", str(path), "--prompt", "a fox", "--image", str(tmp_path / "first.png"),
                     "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and "no LLaVA image path" in err and "--llm LLAVA_DIR" in err
    assert not out.exists()
