"""The optimizer: AdamW over the trainable params with fp32 state, learning-rate warm-up then decay, and
global-norm clipping. Weight decay skips biases and norm scales (1-D params)."""

from __future__ import annotations

import dataclasses

import jax
import optax

SCHEDULES = ("constant", "cosine", "linear")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    learning_rate: float = 1e-5
    warmup_steps: int = 0
    schedule: str = "constant"      # after warm-up: constant, or cosine / linear decay to end_ratio x lr
    decay_steps: int = 0            # length of the decay (after warm-up); 0 = until the run's last step
    end_ratio: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 1.0          # 0 disables clipping
    ema_decay: float = 0.0          # 0 disables the EMA of the trainable params
    accum_steps: int = 1            # micro-batches per optimizer step (gradient accumulation)

    def __post_init__(self):
        problems = []
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule {self.schedule!r} not in {SCHEDULES}")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if min(self.warmup_steps, self.decay_steps) < 0:
            problems.append("warmup_steps and decay_steps must be >= 0")
        if not 0 <= self.ema_decay < 1:
            problems.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.accum_steps < 1:
            problems.append(f"accum_steps must be >= 1, got {self.accum_steps}")
        if self.clip_norm < 0:
            problems.append(f"clip_norm must be >= 0, got {self.clip_norm}")
        if problems:
            raise ValueError("invalid optimizer settings: " + "; ".join(problems))


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 over ``warmup_steps``, then the chosen decay."""
    peak, end = cfg.learning_rate, cfg.learning_rate * cfg.end_ratio
    decay = cfg.decay_steps or max(total_steps - cfg.warmup_steps, 1)
    if cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, decay, alpha=cfg.end_ratio)
    elif cfg.schedule == "linear":
        after = optax.linear_schedule(peak, end, decay)
    else:
        after = optax.constant_schedule(peak)
    if cfg.warmup_steps == 0:
        return after
    warmup = optax.linear_schedule(0.0, peak, cfg.warmup_steps)
    return optax.join_schedules([warmup, after], [cfg.warmup_steps])


def _decay_mask(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW with the schedule (the schedule is evaluated at the optimizer's own
    step count, which the checkpoint stores)."""
    adamw = optax.adamw(learning_rate_schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                        weight_decay=cfg.weight_decay, mask=_decay_mask)
    if cfg.clip_norm == 0:
        return adamw
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw)
