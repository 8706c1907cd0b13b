"""Flow-matching schedules, the jit-compiled Euler loop and guidance strategies."""

from hcjax.sampling.euler import euler_sample, euler_step
from hcjax.sampling.guidance import classic_cfg, embedded_guidance, multi_branch, single
from hcjax.sampling.schedules import flow_sigmas, flow_timesteps, shift_sigmas

__all__ = ["classic_cfg", "embedded_guidance", "euler_sample", "euler_step", "flow_sigmas", "flow_timesteps",
           "multi_branch", "shift_sigmas", "single"]
