"""CLIP text / vision encoders and the LLaVA projector against tiny random-init ``transformers`` models in fp32,
full-size param shapes against ``transformers`` models on the meta device, and the converters' strictness."""

import chex
import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import transformers

from hcjax.convert import CheckpointMismatch
from hcjax.convert.clip import clip_plan, clip_text_from_torch, clip_vision_from_torch, llava_projector_from_torch
from hcjax.models.params import abstract_params, boxed_abstract_params
from hcjax.models.text.clip import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModel
from hcjax.models.text.llava import LlavaProjector, llava_image_features
from hcjax.parallel.rules import PARAM_AXES

TOL = 1e-5
TINY_TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=16, bos_token_id=0, pad_token_id=1)
TINY_VISION = dict(image_size=28, patch_size=7, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                   num_attention_heads=2)


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def perturbed(model, seed):
    """Every param moved off its init (LayerNorms not 1 / 0, biases non-zero), so that swaps show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def hf_text_config(cfg: CLIPTextConfig) -> transformers.CLIPTextConfig:
    return transformers.CLIPTextConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions, layer_norm_eps=cfg.layer_norm_eps, hidden_act=cfg.hidden_act,
        bos_token_id=0, pad_token_id=1, eos_token_id=cfg.eos_token_id)


def hf_vision_config(cfg: CLIPVisionConfig) -> transformers.CLIPVisionConfig:
    return transformers.CLIPVisionConfig(
        image_size=cfg.image_size, patch_size=cfg.patch_size, num_channels=cfg.num_channels,
        hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, layer_norm_eps=cfg.layer_norm_eps, hidden_act=cfg.hidden_act)


def text_batch(eos, pad, lengths=(12, 7), length=12, seed=0):
    """Right-padded ids: random tokens, EOS at the last valid position, ``pad`` after it."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 90, size=(len(lengths), length))
    mask = (np.arange(length)[None] < np.asarray(lengths)[:, None]).astype(np.int64)
    for i, n in enumerate(lengths):
        ids[i, n - 1] = eos
        ids[i, n:] = pad
    return ids, mask


# eos_token_id 2: the legacy pooling (argmax of the ids; EOS is the highest id and also the padding, as with
# the CLIP tokenizer). eos_token_id 98: the first position of EOS (padding with another id, and with EOS).
@pytest.mark.parametrize("eos_token_id,eos,pad", [(2, 98, 98), (98, 98, 1), (98, 98, 98)])
def test_text_parity(eos_token_id, eos, pad):
    torch.manual_seed(0)
    ref = perturbed(transformers.CLIPTextModel(transformers.CLIPTextConfig(eos_token_id=eos_token_id, **TINY_TEXT)),
                    1)
    cfg = CLIPTextConfig.from_transformers(ref.config)
    assert cfg.eos_token_id == eos_token_id
    params = clip_text_from_torch(ref.state_dict(), cfg)
    ids, mask = text_batch(eos, pad)
    apply = jax.jit(CLIPTextModel(cfg).apply)
    lasts = []
    for m in (mask, None):
        with torch.no_grad():
            out = ref(torch.from_numpy(ids), attention_mask=None if m is None else torch.from_numpy(m))
        last, pooled = apply({"params": params}, ids, m)
        chex.assert_shape(last, (2, 12, 32))
        chex.assert_shape(pooled, (2, 32))
        errs = rel_l2(last, out.last_hidden_state), rel_l2(pooled, out.pooler_output)
        print(f"text eos_token_id={eos_token_id} pad={pad} mask={m is not None}: last {errs[0]:.2e}, "
              f"pooled {errs[1]:.2e}")
        assert max(errs) < TOL, errs
        # the pooled vector is the final state at the last valid position
        np.testing.assert_array_equal(np.asarray(pooled), np.asarray(last)[[0, 1], [11, 6]])
        lasts.append(np.asarray(last))
    # The mask matters only for the padded queries (the attention is causal and the padding on the right):
    # they see the valid keys alone with it, every earlier key without it.
    np.testing.assert_array_equal(lasts[0][:, :7], lasts[1][:, :7])
    assert rel_l2(lasts[0][1, 7:], lasts[1][1, 7:]) > 1e-2


@pytest.fixture(scope="module")
def tiny_llava():
    torch.manual_seed(0)
    text = transformers.LlamaConfig(vocab_size=99, hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=1)
    config = transformers.LlavaConfig(vision_config=transformers.CLIPVisionConfig(**TINY_VISION), text_config=text,
                                      image_token_index=5)
    return perturbed(transformers.LlavaForConditionalGeneration(config), 3)


def test_vision_parity(tiny_llava):
    ref = tiny_llava.model.vision_tower
    cfg = CLIPVisionConfig.from_transformers(ref.config)
    params = clip_vision_from_torch(ref.state_dict(), cfg)
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = ref(pixels, output_hidden_states=True)
    states, pooled = jax.jit(CLIPVisionModel(cfg).apply)({"params": params}, pixels.permute(0, 2, 3, 1).numpy())
    chex.assert_shape(states, (3, 2, 17, 32))
    assert len(out.hidden_states) == 3
    errs = [rel_l2(s, r) for s, r in zip(states, out.hidden_states)] + [rel_l2(pooled, out.pooler_output)]
    print("vision hidden states " + ", ".join(f"{e:.2e}" for e in errs[:-1]) + f"; pooled {errs[-1]:.2e}")
    assert max(errs) < TOL, errs
    # hidden state 0 is the embeddings after pre_layrnorm; the last one has no post_layernorm
    with torch.no_grad():
        assert rel_l2(states[0], ref.pre_layrnorm(ref.embeddings(pixels))) < TOL
    assert rel_l2(states[-1], out.last_hidden_state) < TOL


def test_llava_image_features(tiny_llava):
    """Vision tower and projector converted from a ``LlavaForConditionalGeneration`` state dict (keys under
    ``model.vision_tower.`` / ``model.multi_modal_projector.``), against ``get_image_features``."""
    sd = tiny_llava.state_dict()
    vcfg = CLIPVisionConfig.from_transformers(tiny_llava.config.vision_config)
    projector = LlavaProjector(text_hidden=48, vision_hidden=32)
    vparams = clip_vision_from_torch(sd, vcfg)
    pparams = llava_projector_from_torch(sd, projector)
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = tiny_llava.model.get_image_features(pixels, vision_feature_layer=-2,
                                                  vision_feature_select_strategy="default")
    want = torch.stack(list(out.pooler_output))
    nhwc = pixels.permute(0, 2, 3, 1).numpy()
    states, _ = CLIPVisionModel(vcfg).apply({"params": vparams}, nhwc)
    got = llava_image_features(states, pparams, projector)
    chex.assert_shape(got, (2, 16, 48))
    # running only the layers LLaVA reads gives the same features
    short, pooled = CLIPVisionModel(vcfg).apply({"params": vparams}, nhwc, stop=vcfg.num_layers - 1)
    assert pooled is None and short.shape[0] == vcfg.num_layers
    np.testing.assert_allclose(llava_image_features(short, pparams, projector, feature_layer=-1), got, rtol=1e-6,
                               atol=1e-6)
    err = rel_l2(got, want)
    print(f"llava image features {err:.2e}")
    assert err < TOL


def _numel(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _assert_logical_axes(cfg):
    boxed = boxed_abstract_params(cfg)
    shapes = jax.tree.leaves(nn.meta.unbox(boxed))
    specs = jax.tree.leaves(nn.get_partition_spec(boxed), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert len(specs) == len(shapes)
    for spec, shape in zip(specs, shapes):
        assert len(spec) == len(shape.shape) and all(isinstance(n, str) for n in spec), (spec, shape)
    used = {name for spec in specs for name in spec}
    assert used <= set(PARAM_AXES), used - set(PARAM_AXES)


def _assert_one_to_one(sd, targets, prefix, converted):
    rules = clip_plan(targets, prefix)
    keys = {k for entry in rules.values() for r in (entry if isinstance(entry, list) else [entry]) for k in r.keys}
    assert keys == {k for k in sd if k.startswith(prefix) and not k.endswith("position_ids")}
    assert jax.tree.map(lambda t: t.shape, converted) == jax.tree.map(lambda t: t.shape, targets)


def test_full_size_text_shapes():
    cfg = CLIPTextConfig()
    with torch.device("meta"):
        ref = transformers.CLIPTextModel(hf_text_config(cfg))
    targets = abstract_params(cfg)
    assert _count(targets) == _numel(ref) == 123_060_480
    sd = ref.state_dict()
    _assert_one_to_one(sd, targets, "", clip_text_from_torch(sd, cfg, shapes_only=True))
    # a transformers-4 file (HunyuanVideo's text_encoder_2): "text_model." keys and the position_ids buffer
    old = {f"text_model.{k}": v for k, v in sd.items()}
    old["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    _assert_one_to_one(old, targets, "text_model.", clip_text_from_torch(old, cfg, shapes_only=True))
    _assert_logical_axes(cfg)


def test_full_size_vision_shapes():
    cfg = CLIPVisionConfig()
    with torch.device("meta"):
        ref = transformers.CLIPVisionModel(hf_vision_config(cfg))
        projector_ref = transformers.models.llava.modeling_llava.LlavaMultiModalProjector(
            transformers.LlavaConfig(vision_config=hf_vision_config(cfg), text_config=transformers.LlamaConfig()))
    targets = abstract_params(cfg)
    assert _count(targets) == _numel(ref) == 303_507_456
    sd = ref.state_dict()
    _assert_one_to_one(sd, targets, "", clip_vision_from_torch(sd, cfg, shapes_only=True))
    # the layout of llava-llama-3-8b-v1_1-transformers' files, next to its projector and LLM
    llava = {f"vision_tower.vision_model.{k}": v for k, v in sd.items()}
    llava.update({f"multi_modal_projector.{k}": v for k, v in projector_ref.state_dict().items()})
    llava["language_model.model.embed_tokens.weight"] = torch.empty(8, 8, device="meta")
    _assert_one_to_one(llava, targets, "vision_tower.vision_model.",
                       clip_vision_from_torch(llava, cfg, shapes_only=True))
    projector = LlavaProjector()
    ptargets = abstract_params(projector)
    assert _count(ptargets) == _numel(projector_ref)
    _assert_one_to_one(llava, ptargets, "multi_modal_projector.",
                       llava_projector_from_torch(llava, projector, shapes_only=True))
    feats = jax.eval_shape(lambda s, p: llava_image_features(s, p, projector),
                           jax.ShapeDtypeStruct((25, 1, 577, 1024), np.float32), ptargets)
    chex.assert_shape(feats, (1, 576, 4096))
    _assert_logical_axes(cfg)
    _assert_logical_axes(projector)


def test_converters_are_strict():
    cfg = CLIPTextConfig.from_transformers(transformers.CLIPTextConfig(eos_token_id=98, **TINY_TEXT))
    with torch.device("meta"):
        sd = dict(transformers.CLIPTextModel(hf_text_config(cfg)).state_dict())
    sd = {f"text_model.{k}": v for k, v in sd.items()}
    del sd["text_model.encoder.layers.1.mlp.fc2.bias"]
    sd["text_model.encoder.layers.1.mlp.fc3.weight"] = torch.empty(3, device="meta")
    sd["text_model.final_layer_norm.weight"] = torch.empty(31, device="meta")
    with pytest.raises(CheckpointMismatch) as e:
        clip_text_from_torch(sd, cfg, shapes_only=True)
    assert e.value.missing == ["text_model.encoder.layers.1.mlp.fc2.bias"]
    assert e.value.unexpected == ["text_model.encoder.layers.1.mlp.fc3.weight"]
    assert [k for k, _, _ in e.value.misshaped] == ["text_model.final_layer_norm.weight"]
    assert "text_model.encoder.layers.1.mlp.fc3.weight" in str(e.value) and "CLIP text model" in str(e.value)
    # a vision state dict given to the text converter: nothing fits
    vcfg = CLIPVisionConfig.from_transformers(transformers.CLIPVisionConfig(**TINY_VISION))
    with torch.device("meta"):
        vsd = transformers.CLIPVisionModel(hf_vision_config(vcfg)).state_dict()
    with pytest.raises(CheckpointMismatch) as e:
        clip_text_from_torch(vsd, cfg, shapes_only=True)
    assert "embeddings.patch_embedding.weight" in e.value.unexpected
    with pytest.raises(CheckpointMismatch) as e:
        llava_projector_from_torch({"multi_modal_projector.linear_1.weight": torch.empty(48, 32, device="meta")},
                                   LlavaProjector(48, 32), shapes_only=True)
    assert e.value.missing == ["multi_modal_projector.linear_1.bias", "multi_modal_projector.linear_2.bias",
                               "multi_modal_projector.linear_2.weight"]
