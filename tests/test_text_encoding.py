"""Prompts -> embeddings with the Flax encoders: equal to the PyTorch path (tiny transformers Llama and CLIP,
in-memory tokenizers), and ``hcjax sample --prompt`` on a model directory that holds the encoders."""

import os
import sys

import numpy as np
import pytest
import torch

from hcjax import cli, configs, convert
from hcjax.convert.clip import clip_text_from_torch
from hcjax.convert.llama import llama_from_torch
from hcjax.io import read_video
from hcjax.models import random_params
from hcjax.models.text.clip import CLIPTextConfig
from hcjax.models.text.llama import LlamaConfig
from hcjax.models.text import templates
from hcjax.pipelines.text_encoding import TextEncoders
from tests.torch_reference import rel_l2

transformers = pytest.importorskip("transformers")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import convert_text_encoders  # noqa: E402
import encode_text_torch  # noqa: E402
from tests.test_encode_text_tool import _tokenizer  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """Tiny HF encoders with the tiny preset's widths (text 32, pooled 16), saved as local folders."""
    root = tmp_path_factory.mktemp("encoders")
    words = (templates.VIDEO.text + templates.IMAGE.text + " a fox runs in the snow " + templates.DEFAULT_NEGATIVE)
    words = words.replace("\n", " ").split()
    torch.manual_seed(0)
    llm = transformers.LlamaModel(transformers.LlamaConfig(
        vocab_size=len(set(words)) + 8, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)).eval()
    clip = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(set(words)) + 8, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, eos_token_id=2)).eval()
    for model, tok, name in ((llm, _tokenizer(words), "llm"), (clip, _tokenizer(words, bos=False), "clip")):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root, llm, clip


def _flax(root, llm, clip):
    llm_cfg = LlamaConfig.from_transformers(llm.config, dtype="float32", param_dtype="float32")
    clip_cfg = CLIPTextConfig.from_transformers(clip.config, dtype="float32", param_dtype="float32")
    toks = [transformers.AutoTokenizer.from_pretrained(root / n, padding_side="right") for n in ("llm", "clip")]
    return TextEncoders(llm_cfg, llama_from_torch(llm.state_dict(), llm_cfg), clip_cfg,
                        clip_text_from_torch(clip.state_dict(), clip_cfg), *toks)


@pytest.mark.parametrize("frames", [129, 1])
def test_flax_encoding_equals_torch(encoders, frames):
    root, llm, clip = encoders
    enc = _flax(root, llm, clip)
    prompts = ["a fox runs in the snow", "a fox"]
    got = enc.encode(prompts, frames)
    want = encode_text_torch.encode(llm, enc.llm_tokenizer, clip, enc.clip_tokenizer, prompts, video=frames > 1)
    assert got.states.shape == (2, 256, 32) and got.pooled.shape == (2, 16)
    np.testing.assert_array_equal(got.mask, want.mask)
    assert got.mask[0].sum() > got.mask[1].sum() > 0
    assert rel_l2(got.states, want.states) < TOL and rel_l2(got.pooled, want.pooled) < TOL


def test_sample_encodes_the_prompt_from_the_model_dir(encoders, tmp_path, capsys):
    root, _, _ = encoders
    preset = configs.get("tiny")
    model = tmp_path / "model"
    convert.save_model_dir(model, "tiny", random_params(preset.dit, 1), random_params(preset.vae, 2))
    convert_text_encoders.convert_folders(str(root / "llm"), str(root / "clip"), str(model), dtype="float32")
    out = tmp_path / "fox.mp4"
    assert cli.main(["sample", "--model", str(model), "--prompt", "a fox runs in the snow", "--steps", "2",
                     "--cfg-scale", "3.0", "--frames", "5", "--out", str(out), "--no-progress"]) == 0
    assert read_video(out).shape == (5, 64, 96, 3)
