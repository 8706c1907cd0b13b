"""Generic layers: attention (one entry point), RoPE, embeddings, norms, modulation, block stacks."""

from hcjax.nn.attention import attention

__all__ = ["attention"]
