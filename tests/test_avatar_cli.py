"""``hcjax sample`` on HunyuanVideo-Avatar end to end with tiny weights: the video is as long as the audio (long
audio through the position-shift fusion), as large as the reference rule says; two characters with two audios and
two faces; every input problem is one message and no file; a model directory encodes both texts through a tiny
LLaVA with the same stretched character image, the official prefix / negative and positional DiT masks."""

from __future__ import annotations


import numpy as np
import pytest

from hcjax import cli, configs, convert
from hcjax.io import read_image, read_video, write_png
from hcjax.models.text import templates
from hcjax.pipelines.avatar_media import reference_image, reference_size
from tests.media_helpers import sine_wav


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("avatar_media")
    image = np.zeros((120, 90, 3), np.uint8)
    image[10:110, 5:85] = (200, 120, 90)
    write_png(root / "ref.png", image)
    write_png(root / "wide.png", np.full((90, 160, 3), 150, np.uint8))
    mask = np.zeros((90, 160), np.uint8)
    mask[20:50, 60:100] = 255
    write_png(root / "mask.png", np.repeat(mask[..., None], 3, axis=-1))
    write_png(root / "black.png", np.zeros((120, 90, 3), np.uint8))
    for name, seconds, rate in (("half.wav", 0.5, 16000), ("short.wav", 0.3, 16000), ("long.wav", 1.2, 16000),
                                ("4k.wav", 0.5, 4000), ("empty.wav", 0.0, 16000), ("tiny.wav", 0.02, 16000)):
        sine_wav(root / name, seconds, rate)
    return root


def _sample(argv, media, tmp_path, capsys, prompt="a person talks"):
    argv = [str(media / a) if a.endswith((".png", ".wav")) else a for a in argv]
    out = tmp_path / "out.mp4"
    code = cli.main(["sample", "--prompt", prompt, "--steps", "2", "--out", str(out), "--no-progress", *argv])
    captured = capsys.readouterr()
    return code, out, captured.out + captured.err


def test_one_character_long_audio_gives_the_full_length(media, tmp_path, capsys):
    """1.2 s -> 30 frames, over 3 tiny windows of 9; a 90x160 image at image size 64 -> 64x128."""
    assert reference_size(90, 160, 64) == (64, 128)
    code, out, log = _sample(["--model", "tiny-avatar", "--ref-image", "wide.png", "--audio", "long.wav",
                              "--face-mask", "mask.png"], media, tmp_path, capsys)
    assert code == 0, log
    video = read_video(out)
    assert video.shape == (30, 64, 128, 3) and video.std() > 1
    assert "30 frames 64x128 at 25 fps" in log


def test_two_characters_two_audios_two_faces(media, tmp_path, capsys):
    code, out, log = _sample(["--task", "avatar", "--model", "tiny-avatar", "--ref-image", "ref.png", "--audio",
                              "half.wav", "--audio2", "short.wav", "--face-box", "5,10,40,40", "--face-box",
                              "45,60,40,50"], media, tmp_path, capsys)
    assert code == 0, log
    assert read_video(out).shape == (12, 64, 64, 3)   # the longer audio: 0.5 s = 12 frames


HALF = ["--audio", "half.wav"]


@pytest.mark.parametrize("args,message", [
    (HALF + ["--face-box", "60,10,40,40"], "is not inside the 90x120 (WxH) image"),
    (HALF + ["--face-box", "1,2,3"], "is not of the form 'x,y,w,h'"),
    (["--audio", "4k.wav"], "sample rate of 4000 Hz"),
    (["--audio", "empty.wav"], "has no samples"),
    (["--audio", "tiny.wav"], "too short"),
    (HALF + ["--face-mask", "black.png"], "all black"),
    (HALF + ["--audio2", "short.wav", "--face-box", "5,10,40,40"],
     "2 character(s) (--audio and --audio2) need one face each"),
    (HALF + ["--face-mask", "mask.png"], "is 160x90 (WxH) but --ref-image is 90x120"),
    (["--audio2", "short.wav"], "give --audio PATH"),
    (HALF + ["--frames", "13"], "the audio sets the length"),
    (HALF + ["--height", "64"], "the reference image sets the size"),
    (HALF + ["--task", "video"], "unknown --task 'video'"),
    (HALF + ["--task", "custom"], "--task custom needs a custom model"),
])
def test_avatar_input_errors_are_one_message_and_no_file(args, message, media, tmp_path, capsys):
    argv = ["--model", "tiny-avatar", "--ref-image", "ref.png", *args]
    code, out, log = _sample(argv, media, tmp_path, capsys)
    assert code != 0 and message in log and not out.exists(), log
    assert "Traceback" not in log and log.count("error:") == 1


def test_task_names_the_avatar_preset(media, tmp_path, capsys):
    code, out, log = _sample(["--task", "avatar", "--model", "tiny", "--ref-image", "ref.png"], media, tmp_path,
                             capsys)
    assert code != 0 and "--model hunyuan-avatar (random weights: tiny-avatar)" in log and not out.exists()
    code, out, log = _sample(["--model", "tiny", "--audio2", "half.wav"], media, tmp_path, capsys)
    assert code != 0 and "tiny takes no --audio2" in log


PROMPT = "A woman speaks calmly."


@pytest.fixture(scope="module")
def avatar_dir(tmp_path_factory):
    """tiny-avatar with a tiny LLaVA (28 px tower: 16 features), CLIP and a random Whisper of the preset's size."""
    transformers = pytest.importorskip("transformers")
    import torch

    from hcjax.convert.audio_encoder_dir import save_audio_encoder
    from hcjax.models import random_params
    from hcjax.pipelines import custom_text as ct
    from hcjax.pipelines.avatar_text import AVATAR_NEGATIVE, AVATAR_PREFIX
    from tests.test_encode_text_tool import _tokenizer as word_tokenizer
    from tests.test_llava_text import IMAGE, _perturbed
    from tests.test_llava_text import _tokenizer as llama3_tokenizer
    from tools import convert_text_encoders

    root = tmp_path_factory.mktemp("avatar_dir")
    tok = llama3_tokenizer([templates.VIDEO.text, AVATAR_PREFIX + PROMPT, AVATAR_NEGATIVE, ct.SUFFIX % "person"])
    torch.manual_seed(0)
    text = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    vision = transformers.CLIPVisionConfig(image_size=28, patch_size=7, hidden_size=24, intermediate_size=40,
                                           num_hidden_layers=3, num_attention_heads=2)
    llava = _perturbed(transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=IMAGE, pad_token_id=0)), 1)
    words = (AVATAR_PREFIX + PROMPT + " " + AVATAR_NEGATIVE).replace(",", " ").replace(".", " ").split()
    clip = _perturbed(transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(set(words)) + 8, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, eos_token_id=2)), 3)
    for model, t, name in ((llava, tok, "llava"), (clip, word_tokenizer(words, bos=False), "clip")):
        model.save_pretrained(root / name)
        t.save_pretrained(root / name)
    preset, path = configs.get("tiny-avatar"), root / "model"
    convert.save_model_dir(path, "tiny-avatar", dit_params=random_params(preset.dit, 1),
                           vae_params=random_params(preset.vae, 1))
    convert_text_encoders.convert_folders(str(root / "llava"), str(root / "clip"), str(path), dtype="float32")
    save_audio_encoder(path, preset.audio_encoder, random_params(preset.audio_encoder, 2))
    return path


def test_model_dir_encodes_both_texts_with_the_character_image(avatar_dir, media, tmp_path, capsys, monkeypatch):
    from hcjax.convert.text_encoder_dir import load_llava_image_path, load_text_encoders
    from hcjax.pipelines import avatar, custom_text as ct
    from hcjax.pipelines.avatar_media import llava_pixels_stretched
    from hcjax.pipelines.avatar_text import AVATAR_NEGATIVE, AVATAR_PREFIX
    from hcjax.pipelines.subject_text import SubjectTextEncoders

    seen = {}
    real = avatar.generate_avatar

    def spy(preset, dit_params, vae_params, text, negative, request, inputs, **kw):
        seen.update(text=text, negative=negative, inputs=inputs)
        return real(preset, dit_params, vae_params, text, negative, request, inputs, **kw)

    monkeypatch.setattr(avatar, "generate_avatar", spy)
    code, out, log = _sample(["--model", str(avatar_dir), "--ref-image", "ref.png", "--audio", "half.wav"], media,
                             tmp_path, capsys, prompt=PROMPT)
    assert code == 0, log
    assert read_video(out).shape == (12, 64, 64, 3)
    assert seen["inputs"].audio_feats.shape == (1, 12, 10, 5, 16) and seen["inputs"].face_masks is None

    encoders = SubjectTextEncoders(load_text_encoders(avatar_dir), load_llava_image_path(avatar_dir))
    n = encoders.features - 1                                     # 16 features replace one <image> token
    for key, text in (("text", AVATAR_PREFIX + PROMPT), ("negative", AVATAR_NEGATIVE)):
        got = seen[key]
        mask = np.asarray(got.mask)[0]
        _, tokens = ct.tokenize_custom(encoders.encoders.llm_tokenizer, [text], ["person"])
        np.testing.assert_array_equal(mask, ct.dit_text_mask(tokens, n + 1)[0])   # positional, no cut
        k = int(tokens.sum()) - templates.VIDEO.crop
        assert mask.shape == (256 + n,) and mask[:k].all() and not mask[k:256].any() and mask[256:].all()
        np.testing.assert_allclose(got.pooled, encoders.encoders.pooled([text]), rtol=1e-5, atol=1e-6)
    # the LLaVA image is the resized reference stretched to the tower's 28 px: the same states as the uint8 image
    # stretched by Pillow and padded by Custom's pad_image (the identity at 28 x 28)
    from PIL import Image

    ref = reference_image(read_image(media / "ref.png"), 64)
    stretched = np.asarray(Image.fromarray(ref).resize((28, 28), Image.BILINEAR))
    np.testing.assert_array_equal(ct.pad_image(stretched, 28), stretched)
    np.testing.assert_allclose(ct.normalize_clip(stretched), llava_pixels_stretched(ref, 28))
    want = encoders.encode(AVATAR_PREFIX + PROMPT, [stretched], ["person"])
    np.testing.assert_allclose(seen["text"].states, want.states, rtol=1e-5, atol=1e-5)
