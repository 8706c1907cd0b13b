"""Flow-matching schedules, the jit-compiled Euler loop and guidance strategies."""

from hcjax.sampling.euler import euler_sample, euler_sample_with_state, euler_step
from hcjax.sampling.guidance import (TimeAdaptiveCFG, classic_cfg, embedded_guidance, multi_branch, select_branch,
                                     single)
from hcjax.sampling.schedules import flow_sigmas, flow_timesteps, shift_sigmas
from hcjax.sampling.step_cache import cached_steps

__all__ = ["TimeAdaptiveCFG", "cached_steps", "classic_cfg", "embedded_guidance", "euler_sample",
           "euler_sample_with_state", "euler_step", "flow_sigmas", "flow_timesteps", "multi_branch", "select_branch",
           "shift_sigmas", "single"]
