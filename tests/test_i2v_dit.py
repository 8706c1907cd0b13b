"""The image-to-video DiT (token replacement) against diffusers' ``image_condition_type="token_replace"``
transformer: fp32 relative L2 < 1e-5 from diffusers and official keys, and the clean-frame property."""

import chex
import numpy as np
import pytest
import torch

from hcjax import configs, convert
from tests.test_dit_parity import _inputs, _run_jax, _run_torch
from tests.torch_reference import diffusers_to_official, rel_l2, tiny_diffusers_dit

TOL = 1e-5


@pytest.mark.parametrize("source", ["diffusers", "official"])
@pytest.mark.parametrize("guidance_embed", [True, False])
def test_token_replace_parity(source, guidance_embed):
    cfg = configs.get("tiny-i2v").dit.replace(guidance_embed=guidance_embed)
    ref = tiny_diffusers_dit(cfg, seed=5, image_condition_type="token_replace")
    sd = ref.state_dict()
    params = convert.dit_from_torch(diffusers_to_official(sd) if source == "official" else sd, cfg, source=source)
    inp = _inputs(cfg, [[1] * 7 + [0] * 2, [1] * 3 + [0] * 6], latent_thw=(3, 6, 10), seed=6)
    got, want = _run_jax(cfg, params, inp), _run_torch(ref, inp)
    chex.assert_shape(got, (2, 3, 6, 10, cfg.out_channels))
    assert rel_l2(got, want) < TOL


def test_token_replace_changes_only_through_the_clean_frame():
    """Same params as T2V: outputs differ (first-frame tokens are modulated as clean), and at t = 0 without
    guidance the clean vector equals the common one, so both models agree bit for bit."""
    i2v = configs.get("tiny-i2v").dit.replace(guidance_embed=False)
    t2v = configs.get("tiny").dit.replace(guidance_embed=False)
    sd = tiny_diffusers_dit(t2v, seed=7).state_dict()
    params = convert.dit_from_torch(sd, t2v, source="diffusers")
    inp = _inputs(t2v, [[1] * 9, [1] * 5 + [0] * 4], latent_thw=(2, 4, 6), seed=8)
    assert rel_l2(_run_jax(i2v, params, inp), _run_jax(t2v, params, inp)) > 1e-3
    inp["t"] = torch.zeros(2)
    np.testing.assert_array_equal(_run_jax(i2v, params, inp), _run_jax(t2v, params, inp))
