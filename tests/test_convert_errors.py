"""Checkpoint loading and strictness: every bad checkpoint gives one clear error and no params."""

import argparse
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hcjax import configs, convert
from hcjax.convert import rules
from tests.torch_reference import diffusers_to_official, tiny_diffusers_dit


@pytest.fixture(scope="module")
def cfg():
    return configs.get("tiny").dit


@pytest.fixture(scope="module")
def official_sd(cfg):
    return diffusers_to_official(tiny_diffusers_dit(cfg).state_dict())


@pytest.fixture
def no_data_conversion(monkeypatch):
    """Fails the test if any tensor data is converted: checks must reject a checkpoint on shapes alone."""
    def refuse(_):
        raise AssertionError("tensor data was touched before the checkpoint was validated")
    monkeypatch.setattr(rules, "to_numpy", refuse)


def test_missing_extra_and_misshaped_keys_reported_together(cfg, official_sd, no_data_conversion):
    sd = dict(official_sd)
    del sd["double_blocks.1.img_attn_qkv.weight"]
    sd["audio_models.0.to_q.weight"] = torch.zeros(3, 3)
    sd["final_layer.linear.bias"] = torch.zeros(7)
    with pytest.raises(convert.CheckpointMismatch) as err:
        convert.dit_from_torch(sd, cfg, source="official")
    e = err.value
    assert e.missing == ["double_blocks.1.img_attn_qkv.weight"]
    assert e.unexpected == ["audio_models.0.to_q.weight"]
    assert e.misshaped == [("final_layer.linear.bias", (7,), (64,))]
    for text in ("double_blocks.1.img_attn_qkv.weight", "audio_models.0.to_q.weight", "final_layer.linear.bias"):
        assert text in str(e)


@pytest.mark.parametrize("source", ["official", "diffusers"])
def test_guidance_mismatch_is_named(cfg, official_sd, source, no_data_conversion):
    """A CFG-distilled checkpoint given to a model without guidance embedding: guidance_in keys unexpected."""
    sd = official_sd if source == "official" else tiny_diffusers_dit(cfg).state_dict()
    with pytest.raises(convert.CheckpointMismatch) as err:
        convert.dit_from_torch(sd, cfg.replace(guidance_embed=False), source=source)
    assert err.value.unexpected and not err.value.missing
    assert all("guidance" in k for k in err.value.unexpected)


def test_wrong_source_layout(cfg, official_sd, no_data_conversion):
    with pytest.raises(convert.CheckpointMismatch, match="source='diffusers'"):
        convert.dit_from_torch(official_sd, cfg, source="diffusers")
    with pytest.raises(ValueError, match="source must be one of"):
        convert.dit_from_torch(official_sd, cfg, source="comfy")


def test_safetensors_roundtrip_keeps_bf16(cfg, official_sd, tmp_path):
    path = tmp_path / "dit.safetensors"
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in official_sd.items()}, str(path))
    sd = convert.load_state_dict(path)
    assert str(sd["img_in.proj.weight"].dtype) == "bfloat16"
    np.testing.assert_array_equal(sd["time_in.mlp.0.weight"].astype(np.float32),
                                  official_sd["time_in.mlp.0.weight"].to(torch.bfloat16).float().numpy())
    params = convert.dit_from_torch(sd, cfg, source="official")
    assert params["double_blocks"]["img_attn_qkv"]["kernel"].dtype == np.float32


def test_sharded_safetensors_index(cfg, official_sd, tmp_path):
    keys = sorted(official_sd)
    shards = {"a.safetensors": keys[::2], "b.safetensors": keys[1::2]}
    for name, ks in shards.items():
        save_file({k: official_sd[k].contiguous() for k in ks}, str(tmp_path / name))
    index = {"weight_map": {k: name for name, ks in shards.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    for path in (tmp_path, tmp_path / "model.safetensors.index.json"):
        sd = convert.load_state_dict(path)
        assert set(sd) == set(official_sd)
        np.testing.assert_array_equal(sd[keys[3]], official_sd[keys[3]].numpy())


def test_truncated_safetensors(official_sd, tmp_path):
    path = tmp_path / "dit.safetensors"
    save_file({k: v.contiguous() for k, v in official_sd.items()}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(convert.CheckpointError, match="truncated"):
        convert.load_state_dict(path)
    path.write_bytes(data[:5])
    with pytest.raises(convert.CheckpointError, match="too short"):
        convert.load_state_dict(path)


def test_official_pt_container_is_unwrapped(cfg, official_sd, tmp_path):
    path = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": official_sd}, path)
    params = convert.dit_from_torch(convert.load_state_dict(path), cfg, source="official")
    np.testing.assert_array_equal(params["final_layer"]["linear"]["bias"],
                                  official_sd["final_layer.linear.bias"].numpy())


def test_pt_with_pickled_object_is_refused(official_sd, tmp_path):
    path = tmp_path / "with_args.pt"
    torch.save({"module": official_sd, "args": argparse.Namespace(precision="bf16")}, path)
    with pytest.raises(convert.CheckpointError, match="never unpickles code"):
        convert.load_state_dict(path)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(convert.CheckpointError, match="no such file"):
        convert.load_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "weights.npz").write_bytes(b"x")
    with pytest.raises(convert.CheckpointError, match="unknown checkpoint format"):
        convert.load_state_dict(tmp_path / "weights.npz")


def _fp8_checkpoint(official_sd):
    """Quantizes block linears as the official fp8 release stores them: weight / scale as float8_e4m3fn."""
    sd, scales = dict(official_sd), {}
    for key, w in official_sd.items():
        module = key[: -len(".weight")]
        if key.endswith(".weight") and w.ndim == 2 and ("double_blocks" in key or "single_blocks" in key):
            scales[module] = w.abs().max() / 448.0
            sd[key] = (w / scales[module]).to(torch.float8_e4m3fn)
    return sd, scales


def test_fp8_checkpoint_dequantizes_as_the_official_linear(cfg, official_sd, tmp_path):
    sd, scales = _fp8_checkpoint(official_sd)
    torch.save({"module": sd}, tmp_path / "model_fp8.pt")
    torch.save({"module": scales}, tmp_path / "model_fp8_map.pt")
    plain = convert.load_fp8_state_dict(tmp_path / "model_fp8.pt")
    key = "single_blocks.1.linear1.weight"
    want = sd[key].to(torch.bfloat16) * scales["single_blocks.1.linear1"].to(torch.bfloat16)
    np.testing.assert_array_equal(plain[key].astype(np.float32), want.float().numpy())
    params = convert.dit_from_torch(plain, cfg, source="official")
    np.testing.assert_array_equal(params["single_blocks"]["linear1"]["kernel"][1], want.float().numpy().T)
    (tmp_path / "model_fp8_map.pt").unlink()
    with pytest.raises(convert.CheckpointError, match="scale map is missing"):
        convert.load_fp8_state_dict(tmp_path / "model_fp8.pt")


def test_fp8_map_must_match_the_checkpoint(official_sd):
    sd, scales = _fp8_checkpoint(official_sd)
    with pytest.raises(convert.CheckpointError, match="not float8"):
        convert.dequantize_fp8(official_sd, scales)
    with pytest.raises(convert.CheckpointError, match="without a weight"):
        convert.dequantize_fp8(sd, {**scales, "double_blocks.9.img_mlp.fc1": torch.tensor(1.0)})
