"""Dense layers whose params carry logical axis names, with the reference's initialisers."""

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable

# torch.nn.Linear's default weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_linear_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def partitioned(init: Initializer, names: Sequence[str | None]) -> Initializer:
    """Wraps an initialiser so the param is boxed with logical axis ``names``."""
    return nn.with_logical_partitioning(init, tuple(names))


class Dense(nn.Module):
    """``y = x @ kernel + bias``; kernel ``[in, out]`` with logical names ``axes = (in_name, out_name)``.

    Inputs and kernel are cast to ``dtype`` (the compute dtype), as autocast does for ``nn.Linear``.
    """

    features: int
    axes: tuple[str, str]
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    use_bias: bool = True
    kernel_init: Initializer = torch_linear_init
    bias_init: Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (x.shape[-1], self.features)
        kernel = self.param("kernel", partitioned(self.kernel_init, self.axes), shape, self.param_dtype)
        y = jnp.matmul(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            bias = self.param("bias", partitioned(self.bias_init, self.axes[1:]), shape[1:], self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y
