"""``tools/encode_text_torch.py`` on tiny random-init transformers models (Llama + CLIP text) with an in-memory
tokenizer: the template crop, right padding, ``hidden_states[-3]``, and a file ``hcjax sample`` accepts."""

import os
import sys

import numpy as np
import pytest
import torch

from hcjax import cli
from hcjax.io import read_video
from hcjax.models.text import templates
from hcjax.pipelines import text_inputs

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
transformers = pytest.importorskip("transformers")
import encode_text_torch as tool  # noqa: E402


def _tokenizer(words, bos=True):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(sorted(set(words)))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    else:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                                eos_token="</s>", unk_token="<unk>", padding_side="right")


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    words = (templates.VIDEO.text + " a fox runs " + templates.DEFAULT_NEGATIVE).replace("\n", " ").split()
    llm = transformers.LlamaModel(transformers.LlamaConfig(
        vocab_size=len(set(words)) + 8, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)).eval()
    clip = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(set(words)) + 8, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, eos_token_id=2)).eval()
    return llm, _tokenizer(words), clip, _tokenizer(words, bos=False)


def test_states_are_the_cropped_third_to_last_layer(models):
    llm, llm_tok, clip, clip_tok = models
    emb = tool.encode(llm, llm_tok, clip, clip_tok, ["a fox runs"])
    assert emb.states.shape == (1, 256, 32) and emb.pooled.shape == (1, 16)
    full = llm_tok([templates.VIDEO.format("a fox runs")], return_tensors="pt").input_ids
    n_valid = full.shape[1] - templates.VIDEO.crop
    np.testing.assert_array_equal(emb.mask[0], (np.arange(256) < n_valid).astype(np.int32))
    with torch.no_grad():
        hidden = llm(input_ids=full, output_hidden_states=True).hidden_states
    assert len(hidden) == 5   # embeddings + 4 layers: [-3] is the output of layer 2, before the final norm
    np.testing.assert_allclose(emb.states[0, :n_valid], hidden[-3][0, templates.VIDEO.crop:].numpy(), atol=1e-5)


def test_file_drives_hcjax_sample(models, tmp_path, capsys):
    llm, llm_tok, clip, clip_tok = models
    pos = tool.encode(llm, llm_tok, clip, clip_tok, ["a fox runs"])
    neg = tool.encode(llm, llm_tok, clip, clip_tok, [templates.DEFAULT_NEGATIVE])
    text_inputs.save(tmp_path / "fox.safetensors", pos, neg)
    loaded, loaded_neg = text_inputs.load(tmp_path / "fox.safetensors")
    np.testing.assert_array_equal(loaded.states, pos.states)
    out = tmp_path / "fox.mp4"
    assert cli.main(["sample", "--model", "tiny", "--text-embeds", str(tmp_path / "fox.safetensors"), "--steps",
                     "2", "--cfg-scale", "4.0", "--frames", "5", "--out", str(out), "--no-progress"]) == 0
    assert read_video(out).shape == (5, 64, 96, 3)
