"""The Whisper encoder against a tiny random-init ``transformers.WhisperModel`` in fp32: the final state and every
hidden state (``transformers``' list, and every layer's raw output through forward hooks); full-size param counts
against ``transformers`` encoders built on the meta device; strict conversion of the three key layouts."""

import chex
import jax
import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder as TorchWhisperEncoder

from hcjax.convert import CheckpointMismatch
from hcjax.convert.whisper import whisper_encoder_from_torch
from hcjax.models.audio import WHISPER_LARGE_V3, WHISPER_TINY, WhisperEncoder, WhisperEncoderConfig
from hcjax.models.params import abstract_params, count_params, logical_axes
from hcjax.parallel.rules import PARAM_AXES

TOL = 1e-5
BATCH = 2


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def hf_config(cfg: WhisperEncoderConfig, **decoder) -> WhisperConfig:
    """A ``WhisperConfig`` whose encoder is ``cfg`` (a small decoder unless told otherwise)."""
    dec = dict(vocab_size=64, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, max_target_positions=16,
               pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    dec.update(decoder)
    return WhisperConfig(num_mel_bins=cfg.num_mel_bins, d_model=cfg.d_model, encoder_layers=cfg.encoder_layers,
                         encoder_attention_heads=cfg.encoder_attention_heads, encoder_ffn_dim=cfg.encoder_ffn_dim,
                         max_source_positions=cfg.max_source_positions, **dec)


@pytest.fixture(scope="module")
def cfg():
    return WhisperEncoderConfig(num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=2,
                                encoder_ffn_dim=64, max_source_positions=20)


@pytest.fixture(scope="module")
def ref(cfg):
    """Random init, then every param perturbed (the default init zeroes biases and sets LayerNorms to 1, which
    would hide a mis-mapped bias or norm)."""
    torch.manual_seed(0)
    model = WhisperModel(hf_config(cfg)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def features(cfg):
    return np.random.default_rng(0).standard_normal((BATCH, cfg.num_frames, cfg.num_mel_bins)).astype(np.float32)


@pytest.fixture(scope="module")
def torch_out(ref, features):
    """``transformers``' encoder output with ``output_hidden_states``, and every layer's (input, raw output)."""
    raw = {}
    hooks = [layer.register_forward_hook(lambda _m, args, out, i=i: raw.__setitem__(i, (args[0], out)))
             for i, layer in enumerate(ref.encoder.layers)]
    try:
        with torch.inference_mode():
            out = ref.encoder(torch.from_numpy(features).transpose(1, 2), output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    return out, [raw[i] for i in range(len(raw))]


@pytest.fixture(scope="module")
def jax_out(cfg, ref, features):
    params = whisper_encoder_from_torch(ref.state_dict(), cfg)
    return jax.jit(WhisperEncoder(cfg).apply)({"params": params}, features)


def test_last_hidden_state_matches(cfg, torch_out, jax_out):
    out, _ = torch_out
    chex.assert_shape(jax_out["last_hidden_state"], (BATCH, cfg.max_source_positions, cfg.d_model))
    assert rel_l2(jax_out["last_hidden_state"], out.last_hidden_state.numpy()) < TOL


def test_hidden_states_match_transformers_list(cfg, torch_out, jax_out):
    """``transformers`` 5.x ``hidden_states`` = [embeddings + positions, layers 1..N-1 raw, last_hidden_state]:
    the same list 4.41 built by hand (the one the official audio code consumed)."""
    out, raw = torch_out
    hs = out.hidden_states
    assert len(hs) == len(jax_out["hidden_states"]) == cfg.encoder_layers + 1
    # what 5.x returns, in terms of the hooks: the 4.41 list
    legacy = [raw[0][0]] + [o for _, o in raw[:-1]] + [out.last_hidden_state]
    assert all(torch.equal(a, b) for a, b in zip(hs, legacy))
    assert not torch.equal(hs[-1], raw[-1][1])  # the last layer's raw output is not in it
    chex.assert_shape(list(jax_out["hidden_states"]), (BATCH, cfg.max_source_positions, cfg.d_model))
    for i, (mine, theirs) in enumerate(zip(jax_out["hidden_states"], hs)):
        assert rel_l2(mine, theirs.numpy()) < TOL, i


def test_raw_hidden_states_match_hooks(cfg, torch_out, jax_out):
    """Embeddings + positions (the input of layer 1), then every layer's raw output, final norm not applied."""
    _, raw = torch_out
    expected = [raw[0][0]] + [o for _, o in raw]
    assert len(jax_out["raw_hidden_states"]) == len(expected) == cfg.encoder_layers + 1
    for i, (mine, theirs) in enumerate(zip(jax_out["raw_hidden_states"], expected)):
        assert rel_l2(mine, theirs.numpy()) < TOL, i


def test_without_hidden_states(cfg, ref, features, jax_out):
    params = whisper_encoder_from_torch(ref.state_dict(), cfg)
    out = jax.jit(WhisperEncoder(cfg).apply, static_argnums=2)({"params": params}, features, False)
    assert out["hidden_states"] is None and out["raw_hidden_states"] is None
    # another program (no hidden states kept): equal up to fp32 rounding of differently fused ops
    assert rel_l2(out["last_hidden_state"], jax_out["last_hidden_state"]) < 1e-6


def test_wrong_frame_count_is_refused(cfg):
    with pytest.raises(ValueError, match=f"{cfg.num_frames}"):
        WhisperEncoder(cfg).init(jax.random.key(0), np.zeros((1, cfg.num_frames - 2, cfg.num_mel_bins), np.float32))


def test_key_layouts_convert_alike(cfg, ref):
    """``WhisperModel``, ``WhisperForConditionalGeneration`` and bare-encoder keys give the same params; the
    decoder side is dropped."""
    sd = ref.state_dict()
    base = whisper_encoder_from_torch(sd, cfg)
    generation = {f"model.{k}": v for k, v in sd.items()}
    generation["proj_out.weight"] = sd["decoder.embed_tokens.weight"]
    bare = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    for other in (generation, bare):
        jax.tree.map(np.testing.assert_array_equal, whisper_encoder_from_torch(other, cfg), base)


def test_missing_and_extra_keys_are_named(cfg, ref):
    sd = dict(ref.state_dict())
    del sd["encoder.layers.1.fc2.bias"]
    sd["encoder.layers.0.self_attn.k_proj.bias"] = torch.zeros(cfg.d_model)  # Whisper's k_proj has no bias
    sd["encoder.embed_positions.weight"] = torch.zeros(cfg.max_source_positions + 1, cfg.d_model)
    with pytest.raises(CheckpointMismatch) as err:
        whisper_encoder_from_torch(sd, cfg)
    e = err.value
    assert e.missing == ["encoder.layers.1.fc2.bias"]
    assert e.unexpected == ["encoder.layers.0.self_attn.k_proj.bias"]
    assert e.misshaped == [("encoder.embed_positions.weight", (21, 32), (20, 32))]
    for key in ("encoder.layers.1.fc2.bias", "encoder.layers.0.self_attn.k_proj.bias"):
        assert key in str(e)


def test_non_decoder_extras_are_not_ignored(cfg, ref):
    sd = dict(ref.state_dict(), **{"projector.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointMismatch) as err:
        whisper_encoder_from_torch(sd, cfg)
    assert err.value.unexpected == ["projector.weight"] and not err.value.missing


def test_logical_axes_are_documented():
    specs = jax.tree.leaves(logical_axes(WHISPER_TINY),
                            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    shapes = jax.tree.leaves(abstract_params(WHISPER_TINY))
    assert len(specs) == len(shapes)
    for spec, shape in zip(specs, shapes):
        assert len(spec) == len(shape.shape), (spec, shape)
    assert {n for spec in specs for n in spec} <= set(PARAM_AXES)


@pytest.mark.parametrize("cfg_full", [WHISPER_TINY, WHISPER_LARGE_V3], ids=["tiny", "large-v3"])
def test_full_size_param_count_and_shapes_only_conversion(cfg_full):
    with torch.device("meta"):
        encoder = TorchWhisperEncoder(hf_config(cfg_full, vocab_size=51865))
    sd = encoder.state_dict()
    torch_count = sum(p.numel() for p in sd.values())
    abstract = abstract_params(cfg_full)
    assert count_params(abstract) == torch_count
    converted = whisper_encoder_from_torch(sd, cfg_full, shapes_only=True)
    assert jax.tree.map(lambda x: x.shape, converted) == jax.tree.map(lambda x: x.shape, abstract)
    # one-to-one: one torch tensor per param, per layer for the stacked ones
    leaves = jax.tree_util.tree_leaves_with_path(abstract)
    per_layer = sum(cfg_full.encoder_layers if path[0].key == "layers" else 1 for path, _ in leaves)
    assert per_layer == len(sd)
    expected = {"tiny": 8_208_384, "large-v3": 636_968_960}
    assert torch_count == expected["tiny" if cfg_full is WHISPER_TINY else "large-v3"]
