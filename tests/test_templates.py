"""The MLLM prompt templates: ids, crop and masks against an independently assembled expectation (an
in-memory tokenizer whose special tokens are the template's)."""

import dataclasses

import numpy as np
import pytest

from hcjax.models.text import templates

transformers = pytest.importorskip("transformers")
SPECIAL = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<pad>"]


def _tokenizer(words):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(SPECIAL + sorted(set(words)) + ["<unk>"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", 0)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                                padding_side="right")
    fast.add_special_tokens({"additional_special_tokens": SPECIAL[1:4]})
    return fast


@pytest.mark.parametrize("template", [templates.VIDEO, templates.IMAGE])
def test_crop_leaves_prompt_and_eot(template):
    prompt = "a red fox runs through fresh snow"
    tok = _tokenizer((template.text + " " + prompt).replace("{}", " ").split())
    prefix, suffix = template.text.split("{}")
    ids_of = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    n_prefix = 1 + len(ids_of(prefix))                     # BOS + template prefix
    toy = dataclasses.replace(template, crop=n_prefix)     # the real tokenizer gives 95 / 36
    ids, mask = templates.tokenize(tok, [prompt, "a fox"], toy)
    assert ids.shape == (2, templates.MAX_TEXT + n_prefix)
    want = [tok.convert_tokens_to_ids("<|begin_of_text|>")] + ids_of(prefix) + ids_of(prompt) + ids_of(suffix)
    np.testing.assert_array_equal(ids[0, :len(want)], want)
    cropped_ids, cropped_mask = templates.crop(ids, mask, toy)
    assert cropped_mask.shape == (2, templates.MAX_TEXT)
    assert cropped_mask[0].sum() == len(ids_of(prompt)) + 1 and cropped_mask[1].sum() == 3   # prompt + eot
    np.testing.assert_array_equal(cropped_ids[0, :cropped_mask[0].sum()], ids_of(prompt) + ids_of(suffix))
    assert (cropped_ids[0, cropped_mask[0].sum():] == tok.pad_token_id).all()


def test_long_prompts_are_truncated_to_256():
    prompt = " ".join(["snow"] * 400)
    tok = _tokenizer((templates.VIDEO.text + " snow").replace("{}", " ").split())
    n_prefix = 1 + len(tok(templates.VIDEO.text.split("{}")[0], add_special_tokens=False)["input_ids"])
    ids, mask = templates.tokenize(tok, [prompt], dataclasses.replace(templates.VIDEO, crop=n_prefix))
    assert mask.sum() == templates.MAX_TEXT + n_prefix and ids.shape[1] == templates.MAX_TEXT + n_prefix


def test_template_constants():
    assert templates.VIDEO.crop == 95 and templates.IMAGE.crop == 36
    assert templates.for_frames(1) is templates.IMAGE and templates.for_frames(129) is templates.VIDEO
    assert "the video.2. The color" in templates.VIDEO.text   # no space after "video." (as the reference)
