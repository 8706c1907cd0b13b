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
