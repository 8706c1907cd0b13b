"""The Flax DiT against a tiny random-init diffusers HunyuanVideoTransformer3DModel, converted from its own
keys and from the official key layout; fp32 relative L2 error < 1e-5."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hcjax import configs, convert
from hcjax.models import HunyuanVideoDiT
from tests.torch_reference import diffusers_to_official, rel_l2, tiny_diffusers_dit, to_channels_last

TOL = 1e-5


def _inputs(cfg, mask_rows, latent_thw=(3, 8, 12), seed=1):
    g = torch.Generator().manual_seed(seed)
    b, length = len(mask_rows), len(mask_rows[0])
    return dict(
        x=torch.randn(b, cfg.in_channels, *latent_thw, generator=g),
        t=torch.tensor([937.5, 250.0, 31.25][:b]),
        txt=torch.randn(b, length, cfg.text_dim, generator=g),
        mask=torch.tensor(mask_rows),
        pooled=torch.randn(b, cfg.pooled_dim, generator=g),
        guidance=torch.tensor([6016.0, 3504.0, 4992.0][:b]) if cfg.guidance_embed else None,
    )


def _run_torch(model, inp):
    with torch.no_grad():
        out = model(inp["x"], inp["t"], inp["txt"], inp["mask"], inp["pooled"], inp["guidance"], return_dict=False)
    return to_channels_last(out[0])


def _run_jax(cfg, params, inp):
    g = inp["guidance"]
    out = jax.jit(HunyuanVideoDiT(cfg).apply)(
        {"params": params}, to_channels_last(inp["x"]), inp["t"].numpy(), inp["txt"].numpy(),
        inp["mask"].numpy(), inp["pooled"].numpy(), None if g is None else g.numpy())
    return np.asarray(out)


@pytest.mark.parametrize("guidance_embed", [True, False])
@pytest.mark.parametrize("source", ["diffusers", "official"])
def test_parity_padded_batch(guidance_embed, source):
    """Batch 2 with different text lengths (right padding), non-square grid, T > 1."""
    cfg = configs.get("tiny").dit.replace(guidance_embed=guidance_embed)
    ref = tiny_diffusers_dit(cfg)
    sd = ref.state_dict()
    if source == "official":
        sd = diffusers_to_official(sd)
    params = convert.dit_from_torch(sd, cfg, source=source)
    inp = _inputs(cfg, [[1] * 9, [1] * 4 + [0] * 5])
    want, got = _run_torch(ref, inp), _run_jax(cfg, params, inp)
    chex.assert_shape(got, (2, 3, 8, 12, cfg.out_channels))
    assert rel_l2(got, want) < TOL


def test_parity_positional_mask_and_deeper_model():
    """A mask that is not a right-padded prefix (HunyuanCustom's kind: the refiner uses it by position, the
    joint attention by count), an odd patch grid, three samples and an unequal depth."""
    cfg = configs.get("tiny").dit.replace(depth_double=3, depth_single=1, guidance_embed=False)
    ref = tiny_diffusers_dit(cfg, seed=3)
    params = convert.dit_from_torch(ref.state_dict(), cfg, source="diffusers")
    inp = _inputs(cfg, [[1, 1, 0, 0, 1, 1], [1, 0, 0, 0, 0, 0], [1] * 6], latent_thw=(2, 6, 10), seed=4)
    assert rel_l2(_run_jax(cfg, params, inp), _run_torch(ref, inp)) < TOL


def test_padding_does_not_leak_into_video():
    """Changing padded text states (and their refiner outputs) leaves the velocity bit-identical."""
    cfg = configs.get("tiny").dit
    ref = tiny_diffusers_dit(cfg)
    params = convert.dit_from_torch(ref.state_dict(), cfg, source="diffusers")
    inp = _inputs(cfg, [[1] * 5 + [0] * 4, [1] * 3 + [0] * 6])
    out1 = _run_jax(cfg, params, inp)
    inp["txt"][:, 5:] = torch.randn(2, 4, cfg.text_dim) * 10
    np.testing.assert_array_equal(_run_jax(cfg, params, inp), out1)


def test_bf16_compute_close_to_fp32():
    """bf16 compute with fp32 params stays within bf16 noise of the fp32 model, and returns bf16."""
    cfg = configs.get("tiny").dit
    ref = tiny_diffusers_dit(cfg)
    params = convert.dit_from_torch(ref.state_dict(), cfg, source="diffusers")
    inp = _inputs(cfg, [[1] * 9, [1] * 4 + [0] * 5])
    want = _run_torch(ref, inp)
    cfg16 = cfg.replace(dtype="bfloat16")
    out = jax.jit(HunyuanVideoDiT(cfg16).apply)(
        {"params": params}, to_channels_last(inp["x"]), inp["t"].numpy(), inp["txt"].numpy(),
        inp["mask"].numpy(), inp["pooled"].numpy(), inp["guidance"].numpy())
    assert out.dtype == jnp.bfloat16
    err = rel_l2(np.asarray(out, np.float32), want)
    assert 1e-4 < err < 3e-2, err
