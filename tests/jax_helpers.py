"""Helpers for JAX-side tests."""

import numpy as np

from hcjax.models import example_inputs


def random_inputs(cfg, batch=2, latent_thw=(3, 4, 6), text_len=6, valid=(6, 3), seed=0):
    """Random DiT inputs with right-padded text of ``valid`` lengths."""
    rng = np.random.default_rng(seed)
    latents, _, _, _, _, guidance = example_inputs(cfg, batch, latent_thw, text_len)
    mask = (np.arange(text_len)[None] < np.asarray(valid)[:, None]).astype(np.int32)
    return dict(
        latents=rng.standard_normal(latents.shape).astype(np.float32),
        timestep=np.linspace(900.0, 100.0, batch).astype(np.float32),
        text_states=rng.standard_normal((batch, text_len, cfg.text_dim)).astype(np.float32),
        text_mask=mask,
        text_pooled=rng.standard_normal((batch, cfg.pooled_dim)).astype(np.float32),
        guidance=None if guidance is None else np.full((batch,), 6016.0, np.float32),
    )
