"""The 13B T2V DiT at full size, without memory: parameter count, logical axes, and the official / diffusers
key sets mapped one-to-one through the converters (diffusers model built on the meta device)."""

import jax
import pytest
import torch

from hcjax import configs, convert
from hcjax.models import abstract_params, count_params
from tests.jax_helpers import assert_every_param_has_logical_axes
from tests.torch_reference import diffusers_to_official


@pytest.fixture(scope="module")
def full_cfg():
    return configs.get("hunyuan-video-t2v").dit


@pytest.fixture(scope="module")
def meta_state_dict():
    from diffusers import HunyuanVideoTransformer3DModel

    with torch.device("meta"):
        model = HunyuanVideoTransformer3DModel()  # diffusers defaults are the 13B T2V config
    return model.state_dict()


def test_param_count(full_cfg):
    assert count_params(abstract_params(full_cfg)) == 12_821_012_544


def test_custom_base_param_count(full_cfg):
    """HunyuanCustom's base DiT is the T2V one without guidance_in (reference: 12,810,782,784)."""
    assert count_params(abstract_params(full_cfg.replace(guidance_embed=False))) == 12_810_782_784


def test_every_param_has_logical_axes(full_cfg):
    assert_every_param_has_logical_axes(full_cfg)


def test_diffusers_keys_map_one_to_one(full_cfg, meta_state_dict):
    assert len(meta_state_dict) == 1264
    shapes = convert.dit_from_torch(meta_state_dict, full_cfg, source="diffusers", shapes_only=True)
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(lambda s: s.shape, abstract_params(full_cfg))


def test_official_keys_map_one_to_one(full_cfg, meta_state_dict):
    official = diffusers_to_official(meta_state_dict)
    assert len(official) == 856
    shapes = convert.dit_from_torch(official, full_cfg, source="official", shapes_only=True)
    assert count_params(shapes) == 12_821_012_544


# HunyuanCustom's extra keys (reference section 2.4), written out here independently of the converter.
CUSTOM_EXTRA = {
    "hunyuan-custom": {},
    "hunyuan-custom-editing": {"bg_in.proj.weight": (3072, 32, 1, 2, 2), "bg_in.proj.bias": (3072,),
                               "bg_proj.weight": (3072, 3072), "bg_proj.bias": (3072,)},
    "hunyuan-custom-audio": {
        "audio_proj.proj1.weight": (1024, 19200), "audio_proj.proj1.bias": (1024,),
        "audio_proj.proj2.weight": (1024, 1024), "audio_proj.proj2.bias": (1024,),
        "audio_proj.proj3.weight": (12288, 1024), "audio_proj.proj3.bias": (12288,),
        "audio_proj.norm.weight": (3072,), "audio_proj.norm.bias": (3072,),
        **{f"audio_models.{k}.{name}": shape for k in range(6) for name, shape in [
            ("norm1.weight", (3072,)), ("norm1.bias", (3072,)), ("norm2.weight", (3072,)), ("norm2.bias", (3072,)),
            ("to_q.weight", (1024, 3072)), ("to_kv.weight", (2048, 3072)), ("to_out.weight", (3072, 1024))]}},
}
CUSTOM_COUNTS = {"hunyuan-custom": 12_810_782_784, "hunyuan-custom-audio": 12_919_666_752,
                 "hunyuan-custom-editing": 12_820_619_328}


@pytest.mark.parametrize("name", list(CUSTOM_COUNTS))
def test_custom_variants_count_and_keys(name, meta_state_dict):
    """Parameter counts from ``jax.eval_shape``; the official key set (T2V without guidance_in, plus the
    variant's extra keys) maps one-to-one; one key more or less is reported by name."""
    from hcjax.convert.rules import CheckpointMismatch

    cfg = configs.get(name).dit
    assert count_params(abstract_params(cfg)) == CUSTOM_COUNTS[name]
    assert_every_param_has_logical_axes(cfg)
    official = {k: v for k, v in diffusers_to_official(meta_state_dict).items() if not k.startswith("guidance_in.")}
    with torch.device("meta"):
        official.update({k: torch.empty(shape) for k, shape in CUSTOM_EXTRA[name].items()})
    shapes = convert.dit_from_torch(official, cfg, source="official", shapes_only=True)
    assert count_params(shapes) == CUSTOM_COUNTS[name]
    with torch.device("meta"):
        extra = dict(official, **{"audio_models.6.to_q.weight": torch.empty(1024, 3072)})
    with pytest.raises(CheckpointMismatch, match="audio_models.6.to_q.weight"):
        convert.dit_from_torch(extra, cfg, source="official", shapes_only=True)
    if CUSTOM_EXTRA[name]:
        missing = dict(official)
        dropped = sorted(CUSTOM_EXTRA[name])[0]
        del missing[dropped]
        with pytest.raises(CheckpointMismatch, match=dropped.replace(".", r"\.")):
            convert.dit_from_torch(missing, cfg, source="official", shapes_only=True)


# HunyuanVideo-Avatar's extra keys (reference A.6), written out here independently of the converter.
_TIMESTEP_MLP = lambda name, d: {f"{name}.mlp.0.weight": (d, 256), f"{name}.mlp.0.bias": (d,),  # noqa: E731
                                 f"{name}.mlp.2.weight": (d, d), f"{name}.mlp.2.bias": (d,)}
AVATAR_EXTRA = {
    "ref_in.proj.weight": (3072, 16, 1, 2, 2), "ref_in.proj.bias": (3072,),
    "before_proj.weight": (3072, 3072), "before_proj.bias": (3072,),
    **{k: v for k, v in CUSTOM_EXTRA["hunyuan-custom-audio"].items() if k.startswith("audio_proj.")},
    **_TIMESTEP_MLP("motion_exp", 768), **_TIMESTEP_MLP("motion_pose", 768), **_TIMESTEP_MLP("fps_proj", 3072),
    **{f"audio_adapter_blocks.{j}.{name}": shape for j in range(10) for name, shape in [
        ("norm1.weight", (3072,)), ("norm1.bias", (3072,)), ("norm2.weight", (3072,)), ("norm2.bias", (3072,)),
        ("to_q.weight", (1024, 3072)), ("to_kv.weight", (2048, 3072)), ("to_out.weight", (3072, 1024))]},
}
AVATAR_COUNT = 12_810_782_784 + 180_710_400   # the base without guidance_in, plus ~180.7M (reference A.6)


def test_avatar_count_and_keys(meta_state_dict):
    """The official Avatar key set (T2V without guidance_in, plus A.6's table) maps one-to-one; the official
    loader is not strict, ours names a missing or an extra key."""
    from hcjax.convert.rules import CheckpointMismatch

    cfg = configs.get("hunyuan-avatar").dit
    assert count_params(abstract_params(cfg)) == AVATAR_COUNT
    assert_every_param_has_logical_axes(cfg)
    official = {k: v for k, v in diffusers_to_official(meta_state_dict).items() if not k.startswith("guidance_in.")}
    with torch.device("meta"):
        official.update({k: torch.empty(shape) for k, shape in AVATAR_EXTRA.items()})
    assert len(official) == 856 - 4 + len(AVATAR_EXTRA)
    shapes = convert.dit_from_torch(official, cfg, source="official", shapes_only=True)
    assert count_params(shapes) == AVATAR_COUNT
    with torch.device("meta"):
        extra = dict(official, **{"audio_adapter_blocks.10.to_q.weight": torch.empty(1024, 3072)})
    with pytest.raises(CheckpointMismatch, match=r"audio_adapter_blocks\.10\.to_q\.weight"):
        convert.dit_from_torch(extra, cfg, source="official", shapes_only=True)
    missing = {k: v for k, v in official.items() if k != "fps_proj.mlp.2.bias"}
    with pytest.raises(CheckpointMismatch, match=r"fps_proj\.mlp\.2\.bias"):
        convert.dit_from_torch(missing, cfg, source="official", shapes_only=True)


# HuMo's extra keys on this backbone (reference B.6 with the DiT width 3072 and 20 double blocks; the block index
# follows ``audio_cross_attn_wrapper`` instead of ``blocks``), plus our mask head, written out independently.
HUMO_EXTRA = {
    "audio_proj.audio_proj_glob_1.layer.weight": (512, 51200), "audio_proj.audio_proj_glob_1.layer.bias": (512,),
    "audio_proj.audio_proj_glob_2.layer.weight": (512, 512), "audio_proj.audio_proj_glob_2.layer.bias": (512,),
    "audio_proj.audio_proj_glob_3.layer.weight": (24576, 512), "audio_proj.audio_proj_glob_3.layer.bias": (24576,),
    "audio_proj.audio_proj_glob_norm.layer.weight": (1536,), "audio_proj.audio_proj_glob_norm.layer.bias": (1536,),
    **{f"audio_cross_attn_wrapper.{i}.{name}": shape for i in range(20) for name, shape in [
        ("norm1_audio.weight", (3072,)), ("norm1_audio.bias", (3072,)),
        ("audio_cross_attn.q.weight", (3072, 3072)), ("audio_cross_attn.q.bias", (3072,)),
        ("audio_cross_attn.k.weight", (3072, 1536)), ("audio_cross_attn.k.bias", (3072,)),
        ("audio_cross_attn.v.weight", (3072, 1536)), ("audio_cross_attn.v.bias", (3072,)),
        ("audio_cross_attn.o.weight", (3072, 3072)), ("audio_cross_attn.o.bias", (3072,)),
        ("audio_cross_attn.norm_q.weight", (3072,)), ("audio_cross_attn.norm_k.weight", (3072,))]},
    "head.fc1.weight": (256, 4 * 3072), "head.fc1.bias": (256,), "head.fc2.weight": (4, 256), "head.fc2.bias": (4,),
}
HUMO_COUNT = 12_810_782_784 + 608_957_700   # the base without guidance_in; audio 605,810,688, mask head 3,147,012


def test_humo_count_and_keys(meta_state_dict):
    """``humo``: HuMo's audio keys (whose ``audio_proj`` has HuMo's own shapes) and the mask head map one-to-one."""
    cfg = configs.get("humo").dit
    assert count_params(abstract_params(cfg)) == HUMO_COUNT
    assert_every_param_has_logical_axes(cfg)
    official = {k: v for k, v in diffusers_to_official(meta_state_dict).items() if not k.startswith("guidance_in.")}
    with torch.device("meta"):
        official.update({k: torch.empty(shape) for k, shape in HUMO_EXTRA.items()})
    shapes = convert.dit_from_torch(official, cfg, source="official", shapes_only=True)
    assert count_params(shapes) == HUMO_COUNT
