"""``hcjax sample`` on a HunyuanCustom model directory with its text encoders: the prompt is encoded through a
tiny LLaVA together with the subject image (image-appended template, the reference's DiT mask), the negative with
a white image and its mask cut to the negative text; a directory without LLaVA's image path is refused.
tools/precompute_dataset.py stores the same LLaVA text with each clip's subject image for training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hcjax import cli, configs, convert
from hcjax.io import read_video, write_png
from hcjax.models import random_params
from hcjax.models.text import templates
from hcjax.pipelines import custom_text as ct
from tests.test_encode_text_tool import _tokenizer as word_tokenizer
from tests.test_llava_text import IMAGE, _perturbed
from tests.test_llava_text import _tokenizer as llama3_tokenizer
from tests.test_training_custom import _custom_clips
from tools import convert_text_encoders, precompute_dataset

transformers = pytest.importorskip("transformers")
PROMPT, NEGATIVE = "A fox runs in the snow.", "blurry"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny LLaVA (32-wide Llama: the tiny DiT's text_dim) and CLIP (16: its pooled_dim) saved as folders."""
    root = tmp_path_factory.mktemp("custom_sources")
    tok = llama3_tokenizer([templates.VIDEO.text, PROMPT, NEGATIVE, ct.SUFFIX % "fox", ct.SUFFIX % ct.UNCOND_NAME,
                            ct.SUFFIX % ct.DEFAULT_NAME, "clip 0 1"])
    torch.manual_seed(0)
    text = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    vision = transformers.CLIPVisionConfig(image_size=28, patch_size=7, hidden_size=24, intermediate_size=40,
                                           num_hidden_layers=3, num_attention_heads=2)
    llava = _perturbed(transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=IMAGE, pad_token_id=0)), 1)
    words = "a fox runs in the snow blurry".split()
    clip = _perturbed(transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(words) + 8, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, eos_token_id=2)), 3)
    for model, t, name in ((llava, tok, "llava"), (clip, word_tokenizer(words, bos=False), "clip")):
        model.save_pretrained(root / name)
        t.save_pretrained(root / name)
    return root


def _custom_dir(path, root, image_path=True):
    preset = configs.get("tiny-custom")
    convert.save_model_dir(path, "tiny-custom", dit_params=random_params(preset.dit, 1),
                           vae_params=random_params(preset.vae, 1))
    convert_text_encoders.convert_folders(str(root / "llava"), str(root / "clip"), str(path), dtype="float32",
                                          image_path=image_path)
    return path


def test_custom_model_dir_encodes_prompt_with_the_images(folders, tmp_path, capsys, monkeypatch):
    from hcjax.pipelines import custom

    seen = {}
    real = custom.generate_custom

    def spy(preset, dit_params, vae_params, text, request, inputs, negative=None, **kw):
        seen.update(text=text, negative=negative)
        return real(preset, dit_params, vae_params, text, request, inputs, negative, **kw)

    monkeypatch.setattr(custom, "generate_custom", spy)
    model = _custom_dir(tmp_path / "m", folders)
    write_png(tmp_path / "ref.png", np.full((40, 30, 3), 200, np.uint8))
    out = tmp_path / "x.mp4"
    code = cli.main(["sample", "--model", str(model), "--prompt", PROMPT, "--negative-prompt", NEGATIVE,
                     "--ref-image", str(tmp_path / "ref.png"), "--ref-name", "fox", "--steps", "2", "--out",
                     str(out), "--no-progress"])
    log = capsys.readouterr()
    assert code == 0, log.err
    assert read_video(out).shape == (9, 64, 96, 3)
    n = 16 - 1                                        # the tiny tower's 16 features replace one <image> token
    text, negative = (np.asarray(seen[k].mask)[0] for k in ("text", "negative"))
    assert text.shape == negative.shape == (256 + n,)
    assert text[-n:].all() and not text[text.sum() - n:256].any()   # [1 x k, 0 x (256 - k), 1 x 15]: positional
    k = int(negative.sum())                           # the negative: one run of ones, the white image's features cut
    assert negative[:k].all() and not negative[k:].any()


def test_custom_model_dir_without_image_path_is_refused(folders, tmp_path, capsys):
    model = _custom_dir(tmp_path / "m", folders, image_path=False)
    write_png(tmp_path / "ref.png", np.full((40, 30, 3), 200, np.uint8))
    out = tmp_path / "x.mp4"
    code = cli.main(["sample", "--model", str(model), "--prompt", "a fox", "--ref-image", str(tmp_path / "ref.png"),
                     "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and "no LLaVA image path" in err and not out.exists()


def test_precompute_stores_the_caption_with_its_subject_image(folders, tmp_path, capsys):
    from hcjax.convert.text_encoder_dir import load_llava_image_path, load_text_encoders
    from hcjax.io import read_image
    from hcjax.pipelines.subject_text import SubjectTextEncoders
    from hcjax.training.data import open_dataset

    model, src = _custom_dir(tmp_path / "m", folders), _custom_clips(tmp_path / "in")
    common = ["--model", str(model), "--src", str(src / "videos"), "--buckets", "32x48", "--frames", "5",
              "--text-dtype", "float32"]
    code = precompute_dataset.main([*common, "--out", str(tmp_path / "d"), "--ref-images", str(src / "refs")])
    assert code == 0, capsys.readouterr().err
    data, n = open_dataset(tmp_path / "d"), 16 - 1          # the tiny tower's 16 features, 256 + 15 tokens
    assert data.spec.text_len == 256 + n
    encoders = SubjectTextEncoders(load_text_encoders(model), load_llava_image_path(model))
    for i in range(2):                                        # the subject file as given, named "object"
        record = data[i]
        want = encoders.encode(f"clip {i}", [read_image(src / "refs" / f"clip{i}.png")], [ct.DEFAULT_NAME])
        np.testing.assert_allclose(record["text_states"], np.asarray(want.states)[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(record["text_mask"], np.asarray(want.mask)[0])
        mask = record["text_mask"]
        assert mask[-n:].all() and not mask[mask.sum() - n:256].any()     # positional: [1 x k, 0 ..., 1 x 15]
    other = encoders.encode("clip 0", [read_image(src / "refs" / "clip1.png")], [ct.DEFAULT_NAME])
    assert not np.allclose(data[0]["text_states"], np.asarray(other.states)[0], atol=1e-3)   # the image matters
    null = data.null_text()["text_mask"]                      # the unconditional branch: one run of ones
    k = int(null.sum())
    assert 0 < k < 256 and null[:k].all() and not null[k:].any()
    # a length that would cut the image features, and a directory without LLaVA's image path, are refused
    assert precompute_dataset.main([*common, "--out", str(tmp_path / "x"), "--text-len", "256"]) == 2
    assert "the caption with its subject image is 271 tokens" in capsys.readouterr().err
    bare = _custom_dir(tmp_path / "bare", folders, image_path=False)
    assert precompute_dataset.main(["--model", str(bare), *common[2:], "--out", str(tmp_path / "x")]) == 2
    assert "has no LLaVA image path" in capsys.readouterr().err and not (tmp_path / "x").exists()
