"""HunyuanVideo-I2V's prompt encoding (``hcjax.pipelines.i2v_text``) against diffusers'
``HunyuanVideoImageToVideoPipeline._get_llama_prompt_embeds`` on a tiny random-init transformers 5 LLaVA in fp32.

The tokenizer is test_llava_text's in-memory WordLevel one over Llama-3's pre-tokenizer regex: it splits the I2V
template's prefix into the real 103 ids (checked against the video template's 95 plus the 8 added pieces). The
vision tower sees 28 px images in 7 px patches: N = 16 image features instead of 576 (template positions
[5, 21)), so 359 ids expand to 374 positions; the text part keeps its real 252 rows.
"""

import chex
import numpy as np
import pytest
import torch
from PIL import Image

from hcjax.convert.clip import clip_vision_from_torch, llava_projector_from_torch
from hcjax.convert.llama import llama_from_torch
from hcjax.models.text import templates
from hcjax.models.text.clip import CLIPVisionConfig
from hcjax.models.text.llama import LlamaConfig
from hcjax.models.text.llava import LlavaProjector
from hcjax.pipelines import i2v_text as it
from tests.test_llava_text import BOS, IMAGE, PAD, _perturbed, _tokenizer
from tests.torch_reference import rel_l2

transformers = pytest.importorskip("transformers")
diffusers_i2v = pytest.importorskip("diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_image2video")
TOL = 1e-5
N, SIZE = 16, 28                       # image features of the tiny tower: (28 / 7) ** 2
TEMPLATE = it.I2V.with_image_len(N)
CROP, MAXLEN = it.I2V.crop, it.I2V.max_length
TEXT_ROWS = it.MAX_TEXT - it.ASSISTANT_TOKENS
PROMPTS = ["A dog runs on the grass, chasing a red ball.", "A man walks."]
LONG = " ".join(["grass"] * 300)        # truncated: the assistant header is cut away
OTHER_PAD = 7                           # a LLaVA config pad id other than the tokenizer's


def _diffusers_template(t: it.I2VTemplate) -> dict:
    return {"template": t.text, "crop_start": t.crop, "image_emb_start": t.image_emb_start,
            "image_emb_end": t.image_emb_end, "image_emb_len": t.image_emb_len}


def _images(seed: int, count: int = 2) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    shapes = [(40, 23), (19, 31), (28, 28)]
    return [Image.fromarray(rng.integers(0, 256, (*shapes[i % 3], 3), dtype=np.uint8)) for i in range(count)]


def _processor(size: int):
    return transformers.CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


@pytest.fixture(scope="module")
def setup():
    tok = _tokenizer([it.I2V.text, templates.VIDEO.text, LONG] + PROMPTS)
    torch.manual_seed(0)
    text = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    vision = transformers.CLIPVisionConfig(image_size=SIZE, patch_size=7, hidden_size=24, intermediate_size=40,
                                           num_hidden_layers=3, num_attention_heads=2)
    llava = _perturbed(transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=IMAGE, pad_token_id=PAD)), 3)
    sd = llava.state_dict()
    llm_cfg = LlamaConfig.from_transformers(text, dtype="float32", param_dtype="float32")
    vision_cfg = CLIPVisionConfig.from_transformers(vision)
    projector = LlavaProjector(text_hidden=32, vision_hidden=24)
    models = (llm_cfg, llama_from_torch(sd, llm_cfg), vision_cfg, clip_vision_from_torch(sd, vision_cfg), projector,
              llava_projector_from_torch(sd, projector))
    pipe = diffusers_i2v.HunyuanVideoImageToVideoPipeline(
        text_encoder=llava, tokenizer=tok, transformer=None, vae=None, scheduler=None, text_encoder_2=None,
        tokenizer_2=None, image_processor=_processor(SIZE))
    return tok, pipe, models


def _ours(setup, prompts, images, interleave, pad=PAD):
    tok, _, models = setup
    return it.encode_i2v_text(*models, tok, prompts, images, IMAGE, pad, interleave, TEMPLATE)


def _theirs(setup, prompts, images, interleave, pad=PAD):
    pipe = setup[1]
    pipe.text_encoder.config.pad_token_id = pad
    try:
        with torch.no_grad():
            states, mask = pipe._get_llama_prompt_embeds(images, prompts, _diffusers_template(TEMPLATE),
                                                         device=torch.device("cpu"), dtype=torch.float32,
                                                         image_embed_interleave=interleave)
    finally:
        pipe.text_encoder.config.pad_token_id = PAD
    return states.numpy(), mask.numpy()


def _compare(got: it.I2VText, want: tuple[np.ndarray, np.ndarray]) -> float:
    chex.assert_shape(got.states, want[0].shape)
    np.testing.assert_array_equal(got.mask, want[1])
    assert got.states.dtype == np.float32 and got.mask.dtype == np.int32
    return rel_l2(got.states, want[0])


# --------------------------------------------------------------------------------------------- template / layout


def test_template_prefix_is_103_tokens(setup):
    tok = setup[0]
    prefix = it.I2V.text.split("{}")[0]
    # independently of the I2V numbers: the video template's prefix (95 ids, as the real Llama-3 tokenizer) with
    # 8 pieces added, each one Llama-3 token
    header = "<|start_header_id|>system<|end_header_id|>\n\n"
    built = (templates.VIDEO.text.split("{}")[0].replace(header, header + "<image>\n")
             .replace("aspects:", "aspects according to the reference image:")
             .replace("<|eot_id|><|start_header_id|>user", "<|eot_id|>\n\n<|start_header_id|>user"))
    assert built == prefix
    added = ["<image>", "\n", " according", " to", " the", " reference", " image", "\n\n"]
    ids = tok(prefix).input_ids
    assert len(ids) == templates.VIDEO.crop + len(added) == it.I2V.crop == 103
    assert tok.unk_token_id not in ids
    assert ids[:6] == [BOS] + tok.convert_tokens_to_ids(["<|start_header_id|>", "system", "<|end_header_id|>",
                                                         "\n\n", "<image>"])
    assert ids.index(IMAGE) == it.I2V.image_emb_start
    assert it.I2V.image_emb_end - it.I2V.image_emb_start == it.I2V.image_emb_len == 576
    # the prompt starts at the crop; the assistant header follows the prompt's <|eot_id|>
    full, mask = it.tokenize_i2v(tok, PROMPTS[:1])
    chex.assert_shape([full, mask], (1, MAXLEN))
    n = len(tok(PROMPTS[0], add_special_tokens=False).input_ids)
    np.testing.assert_array_equal(full[0, CROP:CROP + n], tok(PROMPTS[0], add_special_tokens=False).input_ids)
    tail = tok.convert_tokens_to_ids(["<|eot_id|>", "<|start_header_id|>", "assistant", "<|end_header_id|>", "\n\n"])
    np.testing.assert_array_equal(full[0, CROP + n:CROP + n + 5], tail)
    assert mask.sum() == CROP + n + 5
    assert it.assistant_starts(full, tok.convert_tokens_to_ids(it.END_HEADER)).tolist() == [CROP + n + 4]


def test_official_layout():
    """Rows read out at full size: 359 ids, 934 positions; a prompt of 20 ids (assistant start 127)."""
    a, length = CROP + 20 + 4, MAXLEN
    for k, n_image in [(2, 288), (4, 144), (1, 576), (0, 576), (6, 576)]:
        rows, text = it.output_rows(np.array([a, length]), length, it.I2V, k)
        chex.assert_shape(rows, (2, n_image + TEXT_ROWS))
        chex.assert_shape(text, (2, TEXT_ROWS))
        step = k if 0 < k < 6 else 1
        np.testing.assert_array_equal(rows[:, :n_image], np.broadcast_to(np.arange(5, 581, step), (2, n_image)))
    assert it.interleave_for("latent_concat") == 2 and it.interleave_for("token_replace") == 4
    assert it.interleave_for("other") == 1
    rows, text = it.output_rows(np.array([a, length]), length, it.I2V, 4)
    # prompt + nothing of the assistant header, then "\n\n" and pads; positions shifted by 575
    np.testing.assert_array_equal(text[0], np.r_[103:123, 127:359])
    np.testing.assert_array_equal(rows[0, 144:], np.r_[678:698, 702:934])
    # truncated (assistant start = 359): the last 4 ids dropped
    np.testing.assert_array_equal(text[1], np.r_[103:355])
    with pytest.raises(ValueError, match="differ in length"):
        it.output_rows(np.array([a, 104]), length, it.I2V, 4)      # an <|end_header_id|> right after the crop


@pytest.mark.parametrize("config_pad", [PAD, OTHER_PAD])
def test_expansion_is_diffusers(config_pad):
    rng = np.random.default_rng(0)
    length = 30
    ids = rng.integers(8, 40, (3, length))
    mask = np.zeros((3, length), np.int64)
    for i, valid in enumerate([30, 12, 20]):
        mask[i, :valid] = 1
        ids[i, valid:] = PAD
    ids[:, 5] = IMAGE
    ids[1, 9] = OTHER_PAD
    t = TEMPLATE
    want = diffusers_i2v._expand_input_ids_with_image_tokens(
        torch.from_numpy(ids), torch.from_numpy(mask), length, IMAGE, t.image_emb_len, t.image_emb_start,
        t.image_emb_end, config_pad)
    got = it.expand_image_tokens(ids, IMAGE, config_pad, t)
    for g, key in zip(got, ["input_ids", "attention_mask", "position_ids"]):
        chex.assert_shape(g, (3, length + N - 1))
        np.testing.assert_array_equal(g, want[key].numpy())


# --------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("size", [SIZE, it.LLAVA_SIZE])
def test_preprocess_image_is_clip_image_processor(size):
    rng = np.random.default_rng(size)
    arrays = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in
              [(40, 23, 3), (19, 31, 3), (size, size, 3), (480, 640, 3), (7, 5, 3)]]
    rgba = rng.integers(0, 256, (33, 45, 4), dtype=np.uint8)
    images = [Image.fromarray(a) for a in arrays] + [Image.fromarray(rgba), Image.fromarray(arrays[3][..., 0]),
                                                   Image.fromarray(arrays[0]).convert("P")]
    processor = _processor(size)
    for image in images + arrays:
        want = processor(image, return_tensors="np").pixel_values[0].transpose(1, 2, 0)
        got = it.preprocess_image(image, size)
        chex.assert_shape(got, (size, size, 3))
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)                 # bit-identical to the Pillow backend
    black = it.preprocess_image(it.black_image(720, 1280), size)
    np.testing.assert_allclose(black, np.broadcast_to(-np.array(it.CLIP_MEAN) / it.CLIP_STD, black.shape), rtol=1e-6)
    assert it.resize_shape(720, 1280) == (336, 597) and it.resize_shape(1280, 720) == (597, 336)
    for bad in [np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10), np.uint8)]:
        with pytest.raises(ValueError, match="RGB uint8"):
            it.preprocess_image(bad, size)


# --------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("interleave, config_pad", [(2, PAD), (4, PAD), (4, OTHER_PAD)])
def test_states_match_diffusers(setup, interleave, config_pad):
    images = _images(1)
    got = _ours(setup, PROMPTS, images, interleave, config_pad)
    want = _theirs(setup, PROMPTS, images, interleave, config_pad)
    err = _compare(got, want)
    n_image = N // interleave
    chex.assert_shape(got.states, (2, n_image + TEXT_ROWS, 32))
    lengths = [len(setup[0](p, add_special_tokens=False).input_ids) + 1 for p in PROMPTS]   # prompt + "\n\n"
    np.testing.assert_array_equal(got.mask.sum(axis=1), np.array(lengths) + n_image)
    assert lengths[0] != lengths[1]
    print(f"interleave {interleave}, config pad {config_pad}: rel L2 {err:.2e}")
    assert err < TOL
    if config_pad != PAD:   # the LLM mask is "id != the config's pad id": another id changes the states
        assert rel_l2(got.states, _ours(setup, PROMPTS, images, interleave).states) > 1e-3


def test_truncated_prompts_match_diffusers(setup):
    tok = setup[0]
    images = _images(2)
    # 300 ids: cut inside the prompt; 253: only "<|end_header_id|>\n\n" cut (2 headers left); 252: only "\n\n"
    # cut (3 left, assistant start = 359). All three give the ids [103, 355).
    cases = [LONG, " ".join(["grass"] * 253), " ".join(["grass"] * 252)]
    end_header = tok.convert_tokens_to_ids(it.END_HEADER)
    errs = []
    for prompt, headers in zip(cases, [2, 2, 3]):
        ids, _ = it.tokenize_i2v(tok, [prompt])
        assert (ids == end_header).sum() == headers
        assert it.assistant_starts(ids, end_header).tolist() == [MAXLEN]
        got = _ours(setup, prompt, images[0], 2)
        errs.append(_compare(got, _theirs(setup, prompt, images[0], 2)))
        assert got.mask.all()
    # a batch mixing a truncated and a short prompt: each sample as diffusers encodes it alone (diffusers' own
    # batched call fails on such a batch)
    got = _ours(setup, [PROMPTS[1], LONG], images, 4)
    for i, prompt in enumerate([PROMPTS[1], LONG]):
        want = _theirs(setup, prompt, images[i], 4)
        errs.append(_compare(it.I2VText(got.states[i:i + 1], got.mask[i:i + 1]), want))
    print("truncated: rel L2 " + ", ".join(f"{e:.2e}" for e in errs))
    assert max(errs) < TOL


def test_bad_inputs_fail_before_the_models(setup, monkeypatch):
    tok = setup[0]

    def boom(*args, **kwargs):
        raise AssertionError("the models ran")

    monkeypatch.setattr(it, "_image_features", boom)
    monkeypatch.setattr(it, "_llm_rows", boom)
    image = _images(3, 1)[0]

    def small(text: str, **kw) -> it.I2VTemplate:
        return it.I2VTemplate(text, **kw).with_image_len(N)

    cases = [
        ({"prompts": PROMPTS, "images": _images(3, 3)}, "2 prompts but 3 images"),
        ({"images": np.zeros((SIZE, SIZE, 3), np.float32)}, "RGB uint8"),
        ({"images": np.zeros((SIZE, SIZE, 4), np.uint8)}, "RGB uint8"),
        ({"images": np.zeros((1, SIZE + 1, SIZE + 1, 3), np.float32)}, "pixel values"),
        ({"template": it.I2V}, "image_emb_len 576"),
        ({"template": small(TEMPLATE.text.replace("<image>", ""))}, "exactly one <image>"),
        # <image> after the prompt: truncated away by a long prompt
        ({"prompts": [LONG], "template": small(TEMPLATE.text.replace("<image>\n", "") + "<image>")},
         "one <image> token"),
        ({"template": small(TEMPLATE.text, crop=0)}, "crop 0"),
    ]
    for kwargs, match in cases:
        args = {"prompts": PROMPTS[:1], "images": image, "template": TEMPLATE} | kwargs
        with pytest.raises(ValueError, match=match):
            it.encode_i2v_text(*setup[2], tok, args["prompts"], args["images"], IMAGE, PAD, 4, args["template"])
    tok.padding_side = "left"
    try:
        with pytest.raises(ValueError, match="one <image> token"):
            it.encode_i2v_text(*setup[2], tok, PROMPTS, image, IMAGE, PAD, 4, TEMPLATE)
    finally:
        tok.padding_side = "right"


def test_i2v_embeddings_joins_llava_states_and_clip_pooled(setup):
    """The pipeline's entry: the LLaVA states with the image and CLIP-L's pooled vector of the prompt alone."""
    from hcjax.convert.llava import LlavaImagePath
    from hcjax.pipelines.text_encoding import TextEncoders

    tok, _, (llm_cfg, llm_params, vision_cfg, vision_params, projector, projector_params) = setup

    class Clip:       # a stand-in CLIP-L: the pooled vector is checked to be this one's output
        pooled = staticmethod(lambda prompts: np.full((len(prompts), 8), float(len(prompts[0])), np.float32))

    encoders = TextEncoders.__new__(TextEncoders)
    encoders.llm_cfg, encoders.llm_params, encoders.llm_tokenizer, encoders.pooled = llm_cfg, llm_params, tok, \
        Clip.pooled
    path = LlavaImagePath(vision_cfg, vision_params, projector, projector_params, IMAGE, PAD)
    image = np.asarray(_images(5, 1)[0])
    got = it.i2v_embeddings(encoders, path, PROMPTS[:1], image)
    want = _ours(setup, PROMPTS[:1], image, 4)
    np.testing.assert_array_equal(got.states, want.states)
    np.testing.assert_array_equal(got.mask, want.mask)
    np.testing.assert_array_equal(got.pooled, np.full((1, 8), len(PROMPTS[0]), np.float32))
    with pytest.raises(ValueError, match="one vision feature layer"):
        it.i2v_embeddings(encoders, LlavaImagePath(vision_cfg, vision_params, projector, projector_params, IMAGE,
                                                   PAD, feature_layer=(-2, -1)), PROMPTS[:1], image)
