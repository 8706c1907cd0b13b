"""Models: the HunyuanVideo DiT and causal 3D VAE (text encoders come later)."""

from hcjax.models.dit import HunyuanVideoDiT
from hcjax.models.vae import CausalVAE, DiagonalGaussian
from hcjax.models.params import (abstract_params, count_params, example_inputs, init_params, logical_axes,
                                 random_params)

__all__ = ["CausalVAE", "DiagonalGaussian", "HunyuanVideoDiT", "abstract_params", "count_params", "example_inputs",
           "init_params", "logical_axes", "random_params"]
