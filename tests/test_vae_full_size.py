"""The official VAE at full size, without memory: parameter count, logical axes, and the reference key set
(diffusers model on the meta device; official keys are the same) mapped one-to-one through the converter."""

import jax
import pytest
import torch

from hcjax import configs, convert
from hcjax.models import abstract_params, count_params
from tests.jax_helpers import assert_every_param_has_logical_axes


@pytest.fixture(scope="module")
def full_cfg():
    return configs.get("hunyuan-video-t2v").vae


@pytest.fixture(scope="module")
def meta_model():
    from diffusers import AutoencoderKLHunyuanVideo

    with torch.device("meta"):
        return AutoencoderKLHunyuanVideo()  # diffusers defaults are the official VAE config


def test_param_count_equals_diffusers(full_cfg, meta_model):
    count = count_params(abstract_params(full_cfg))
    assert count == sum(p.numel() for p in meta_model.parameters()) == 246_478_803


def test_reference_keys_map_one_to_one(full_cfg, meta_model):
    sd = meta_model.state_dict()
    shapes = convert.vae_from_torch(sd, full_cfg, shapes_only=True)
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(lambda s: s.shape, abstract_params(full_cfg))
    assert len(jax.tree.leaves(shapes)) == len(sd)


def test_prefixed_training_checkpoint(full_cfg, meta_model):
    """Official training checkpoints prefix keys with ``vae.`` and may carry other modules' keys."""
    sd = {f"vae.{k}": v for k, v in meta_model.state_dict().items()}
    sd["loss.discriminator.weight"] = torch.empty(3, device="meta")
    shapes = convert.vae_from_torch(sd, full_cfg, shapes_only=True)
    assert count_params(shapes) == 246_478_803


def test_every_param_has_logical_axes(full_cfg):
    assert_every_param_has_logical_axes(full_cfg)
