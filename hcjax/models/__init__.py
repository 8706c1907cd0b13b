"""Models: the HunyuanVideo DiT (and, later, the causal VAE and text encoders)."""

from hcjax.models.dit import HunyuanVideoDiT
from hcjax.models.params import (abstract_params, count_params, example_inputs, init_params, logical_axes,
                                 random_params)

__all__ = ["HunyuanVideoDiT", "abstract_params", "count_params", "example_inputs", "init_params", "logical_axes",
           "random_params"]
