"""Parameter trees without running a model: shapes, logical axis names, counts, random init.

Every model of hcjax is covered by its config (the DiT, the VAE, the text / vision / audio encoders and the
LLaVA projector, which is its own config); the functions here take any of them."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hcjax.configs import DiTConfig, VAEConfig
from hcjax.models.dit import HunyuanVideoDiT
from hcjax.models.vae import CausalVAE, example_video


def example_inputs(cfg: DiTConfig, batch: int = 1, latent_shape: tuple[int, int, int] | None = None,
                   text_len: int = 4) -> tuple:
    """Smallest valid positional inputs of ``HunyuanVideoDiT(cfg)`` (zeros), for init and shape tracing."""
    t, h, w = latent_shape or cfg.patch_size
    latents = jnp.zeros((batch, t, h, w, cfg.in_channels), jnp.float32)
    timestep = jnp.zeros((batch,), jnp.float32)
    text = jnp.zeros((batch, text_len, cfg.text_dim), jnp.float32)
    mask = jnp.ones((batch, text_len), jnp.int32)
    pooled = jnp.zeros((batch, cfg.pooled_dim), jnp.float32)
    guidance = jnp.zeros((batch,), jnp.float32) if cfg.guidance_embed else None
    return latents, timestep, text, mask, pooled, guidance


def _model_and_inputs(cfg) -> tuple[nn.Module, tuple, dict]:
    """``(model, smallest init inputs, init keywords)`` for a config (encoders imported lazily)."""
    from hcjax.models.audio.whisper import WhisperEncoder, WhisperEncoderConfig, example_features
    from hcjax.models.text.clip import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModel
    from hcjax.models.text.llama import LlamaConfig, LlamaEncoder
    from hcjax.models.text.llava import LlavaProjector

    ids = jnp.zeros((1, 2), jnp.int32)
    if isinstance(cfg, DiTConfig):
        return HunyuanVideoDiT(cfg), example_inputs(cfg), {}
    if isinstance(cfg, VAEConfig):
        return CausalVAE(cfg), (example_video(cfg),), {}
    if isinstance(cfg, LlamaConfig):
        return LlamaEncoder(cfg), (ids, ids + 1), {}
    if isinstance(cfg, CLIPTextConfig):
        return CLIPTextModel(cfg), (ids,), {}
    if isinstance(cfg, CLIPVisionConfig):
        image = jnp.zeros((1, cfg.image_size, cfg.image_size, cfg.num_channels), jnp.float32)
        return CLIPVisionModel(cfg), (image,), {}
    if isinstance(cfg, LlavaProjector):
        return cfg, (jnp.zeros((1, 1, cfg.vision_hidden), jnp.float32),), {}
    if isinstance(cfg, WhisperEncoderConfig):
        return WhisperEncoder(cfg), (example_features(cfg),), {"output_hidden_states": False}
    raise TypeError(f"no model for a {type(cfg).__name__}; expected the config of a DiT, VAE, Llama, CLIP text / "
                    "vision, Whisper encoder, or a LlavaProjector")


def boxed_abstract_params(cfg) -> dict:
    """``jax.eval_shape`` of ``init``: params boxed with their logical axis names, no memory used."""
    model, inputs, kwargs = _model_and_inputs(cfg)
    return jax.eval_shape(lambda key: model.init(key, *inputs, **kwargs), jax.random.key(0))["params"]


def abstract_params(cfg) -> dict:
    """Pytree of ``jax.ShapeDtypeStruct`` of every param of the model (and of the mechanisms it enables)."""
    return nn.meta.unbox(boxed_abstract_params(cfg))


def logical_axes(cfg) -> dict:
    """Pytree of ``PartitionSpec`` of logical axis names, one per param."""
    return nn.get_partition_spec(boxed_abstract_params(cfg))


def count_params(tree) -> int:
    return int(sum(np.prod(x.shape, dtype=np.int64) for x in jax.tree.leaves(tree)))


def init_params(cfg, rng: jax.Array | int = 0) -> dict:
    """Freshly initialised params (the reference's initialisers), unboxed."""
    model, inputs, kwargs = _model_and_inputs(cfg)
    rng = jax.random.key(rng) if isinstance(rng, int) else rng
    return nn.meta.unbox(jax.jit(lambda key: model.init(key, *inputs, **kwargs))(rng)["params"])


def random_params(cfg, seed: int = 0, scale: float = 0.05) -> dict:
    """Every param drawn from N(0, scale^2), norm scales around 1: a model whose every path is active (the
    reference initialisers zero the modulations and the final layer). For smoke runs and tests."""
    leaves, treedef = jax.tree.flatten_with_path(abstract_params(cfg))
    rng = np.random.default_rng(seed)
    out = []
    for path, shape in leaves:
        x = rng.standard_normal(shape.shape).astype(np.float32) * scale
        if getattr(path[-1], "key", None) == "scale":
            x = x + 1.0
        out.append(jnp.asarray(x, shape.dtype))
    return jax.tree.unflatten(treedef, out)
