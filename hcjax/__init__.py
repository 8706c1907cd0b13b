"""hcjax: HunyuanVideo, HunyuanCustom, HunyuanVideo-Avatar and HuMo's ideas in JAX/Flax."""

__version__ = "0.1.0"
