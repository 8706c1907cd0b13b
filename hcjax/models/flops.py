"""FLOP counts of the DiT, for throughput and MFU figures (benchmarks, training metrics, AOT reports)."""

from __future__ import annotations

from hcjax.configs import DiTConfig


def dit_flops(tokens: int, text: int, hidden: int = 3072, mlp: int = 12288, double: int = 20, single: int = 40
              ) -> float:
    """Forward FLOPs of the blocks: linears (double: qkv, proj, fc1, fc2 per stream; single: linear1, linear2)
    and attention over ``tokens + text``."""
    length = tokens + text
    double_linear = 2 * length * (3 * hidden * hidden + hidden * hidden + 2 * hidden * mlp)
    single_linear = 2 * length * (hidden * (3 * hidden + mlp) + (hidden + mlp) * hidden)
    attention = 4 * length * length * hidden
    return double * (double_linear + attention) + single * (single_linear + attention)


def dit_config_flops(cfg: DiTConfig, tokens: int, text: int) -> float:
    """Forward FLOPs of the blocks of ``cfg`` over ``tokens`` video-side tokens and ``text`` text tokens."""
    return dit_flops(tokens, text, cfg.hidden_size, cfg.mlp_dim, cfg.depth_double, cfg.depth_single)


def train_step_flops(cfg: DiTConfig, tokens: int, text: int, batch: int, remat: str = "none") -> float:
    """FLOPs of one training step: forward + backward (2x forward), plus one more forward under full remat."""
    factor = 4.0 if remat == "full" else 3.0
    return factor * batch * dit_config_flops(cfg, tokens, text)
