"""Helpers for JAX-side tests."""

import jax
import numpy as np

from hcjax.models import abstract_params, example_inputs, logical_axes
from hcjax.parallel.rules import PARAM_AXES


def assert_every_param_has_logical_axes(cfg):
    """Every param of the model of ``cfg`` carries one logical axis name per dimension, each from the
    documented vocabulary (``hcjax.parallel.rules.PARAM_AXES``)."""
    shapes = jax.tree.leaves(abstract_params(cfg))
    specs = jax.tree.leaves(logical_axes(cfg), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert len(specs) == len(shapes)
    for spec, shape in zip(specs, shapes):
        assert len(spec) == len(shape.shape) and all(isinstance(n, str) for n in spec), (spec, shape)
    used = {name for spec in specs for name in spec}
    assert used <= set(PARAM_AXES), used - set(PARAM_AXES)


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


def run_device_checks(script: str, devices: int = 8, timeout: int = 900) -> dict:
    """Runs ``tests/<script>`` in a subprocess with ``devices`` simulated CPU devices and returns the JSON dict
    it prints on its last line."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, os.path.join(root, "tests", script)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)
    print(proc.stdout, proc.stderr[-4000:])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
