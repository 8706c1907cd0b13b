"""Ahead-of-time compilation of the train step or a sampling step for a TPU topology, on a CPU host.

``libtpu`` describes the topology (``jax.experimental.topologies``), the step is lowered for abstract state and
batch carrying their shardings on that topology's mesh, and XLA's memory analysis gives each chip's bytes:
what would not fit is known before a pod is rented. Run through ``hcjax aot`` (which sets up ``libtpu``).

Presets with conditioning mechanisms (HunyuanCustom) get their inputs in the batch (``hcjax.training.aot_cond``):
reference latents, Whisper windows, editing latents. A sampling step of a preset that samples with classic CFG
is one forward of the batch ``[uncond, cond]``.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp

from hcjax import configs
from hcjax.models import HunyuanVideoDiT, abstract_params, logical_axes
from hcjax.models.flops import dit_config_flops, train_step_flops
from hcjax.parallel.mesh import make_mesh
from hcjax.training import loss as loss_lib
from hcjax.training import optimizer as optimizer_lib
from hcjax.training import state as state_lib
from hcjax.training import aot_cond
from hcjax.training import trainable as trainable_lib
from hcjax.training.i2v_cond import i2v_inputs
from hcjax.training.sharded_step import ShardedStep
from hcjax.training.step import make_train_step

GIB = 2.0 ** 30
HBM_GIB = {"v4": 32.0, "v5e": 16.0, "v5litepod": 16.0, "v5p": 95.0, "v6e": 32.0}
# Google's slice names count TensorCores: a v4 / v5p chip has two (one JAX device), v5e / v6e chips one.
SLICE_TOPOLOGIES = {"v5p-8": "v5p:2x2x1", "v5p-16": "v5p:2x2x2", "v5p-32": "v5p:2x2x4", "v5p-64": "v5p:2x4x4",
                    "v5p-128": "v5p:4x4x4", "v5p-256": "v5p:4x4x8", "v5p-512": "v5p:4x8x8",
                    "v4-8": "v4:2x2x1", "v4-32": "v4:2x2x4", "v4-64": "v4:2x4x4", "v4-128": "v4:4x4x4"}


@dataclasses.dataclass(frozen=True)
class AotPlan:
    model: str = "hunyuan-video-t2v"
    task: str = "train"                 # train | sample
    topology: str = "v5p-64"
    height: int = 720
    width: int = 1280
    frames: int = 129
    ref_frames: int | None = None       # reference subjects (one latent frame each); None: 1 with identity, else 0
    text_len: int | None = None         # None: the model's (256; 831 = 256 + 575 LLaVA features per subject)
    batch_per_group: int = 1            # samples per data-parallel group (data x fsdp groups)
    cfg_batch: bool | None = None       # sample: forward [uncond, cond] per sample; None: if the preset uses CFG
    fsdp: int = 0                       # 0: chips / (sequence x tensor x data)
    sequence: int = 8
    tensor: int = 1
    data: int = 1
    sequence_parallel: str = "ulysses"
    attention: str = "splash"
    remat: str = "full"
    depth_double: int = 0               # > 0: fewer blocks (quick checks); 0: the preset's
    depth_single: int = 0

    def __post_init__(self):
        problems = []
        if self.task not in ("train", "sample"):
            problems.append(f"task {self.task!r} must be train or sample")
        if (self.frames - 1) % 4:
            problems.append(f"frames {self.frames} must be 4k+1")
        if self.height % 16 or self.width % 16:
            problems.append(f"height and width must be multiples of 16, got {self.height}x{self.width}")
        if self.ref_frames is not None and self.ref_frames < 0:
            problems.append(f"ref_frames must be >= 0, got {self.ref_frames}")
        if self.text_len is not None and self.text_len < 1:
            problems.append(f"text_len must be >= 1, got {self.text_len}")
        if self.task == "train" and self.cfg_batch:
            problems.append("cfg_batch is for the sample task (training runs one branch per sample)")
        if problems:
            raise ValueError("hcjax aot: " + "; ".join(problems))

    def resolved(self) -> "AotPlan":
        """The plan with the preset's defaults in place of the ``None`` fields; a preset without identity
        references takes no ``ref_frames``."""
        preset = configs.get(self.model)
        ref = aot_cond.default_ref_frames(preset) if self.ref_frames is None else self.ref_frames
        if ref and preset.mechanism("identity") is None:
            raise ValueError(f"hcjax aot: {self.model} has no identity references; ref_frames must be 0")
        text = aot_cond.default_text_len(preset, ref) if self.text_len is None else self.text_len
        cfg_batch = (self.task == "sample" and aot_cond.default_cfg_batch(preset) if self.cfg_batch is None
                     else self.cfg_batch)
        return dataclasses.replace(self, ref_frames=ref, text_len=text, cfg_batch=cfg_batch)


@dataclasses.dataclass(frozen=True)
class AotReport:
    plan: AotPlan
    topology_name: str
    chips: int
    mesh: dict
    tokens: int                         # video-side tokens per sample: reference + video
    video_tokens: int
    batch: int                          # the global batch of the step (both CFG branches counted)
    mechanisms: tuple[str, ...]         # the conditioning besides references (aot_cond.describe)
    compile_seconds: float
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    hbm_bytes: float | None
    model_flops: float
    splash_kernels: bool

    @property
    def peak_bytes(self) -> int:
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

    def text(self) -> str:
        p = self.plan
        mesh = " x ".join(f"{k}={v}" for k, v in self.mesh.items() if v > 1) or "1 device"
        inputs = ", ".join([f"{p.ref_frames} reference frame(s)", *self.mechanisms, f"{p.text_len} text tokens"])
        cfg = ", CFG [uncond, cond] per sample" if p.cfg_batch else ""
        lines = [f"{p.task} step of {p.model} at {p.height}x{p.width}x{p.frames} ({inputs}): {self.tokens} tokens "
                 f"per sample ({self.video_tokens} video + {self.tokens - self.video_tokens} reference), batch "
                 f"{self.batch} ({p.batch_per_group} per data-parallel group{cfg})",
                 f"topology {p.topology} ({self.topology_name}, {self.chips} chips), mesh {mesh}, "
                 f"remat {p.remat}, {p.sequence_parallel} sequence parallelism, {p.attention} attention",
                 f"compiled in {self.compile_seconds:.1f} s",
                 f"per chip: arguments {self.argument_bytes / GIB:.2f} GiB, outputs {self.output_bytes / GIB:.2f} "
                 f"GiB (aliased {self.alias_bytes / GIB:.2f}), temporaries {self.temp_bytes / GIB:.2f} GiB, "
                 f"peak {self.peak_bytes / GIB:.2f} GiB"
                 + (f" of {self.hbm_bytes / GIB:.0f} GiB HBM ({self.peak_bytes / self.hbm_bytes:.0%})"
                    if self.hbm_bytes else ""),
                 f"model FLOPs per step {self.model_flops / 1e15:.1f} PFLOP ({self.model_flops / self.chips / 1e12:.0f} "
                 "TFLOP per chip)",
                 f"splash attention kernels in the program: {'yes' if self.splash_kernels else 'no'}"]
        if self.hbm_bytes:
            lines.append("fits" if self.peak_bytes <= self.hbm_bytes else "DOES NOT FIT")
        return "\n".join(lines)


def topology_devices(name: str):
    """``(topology name, devices)`` of a slice name (``v5p-64``) or a topology (``v5p:2x4x4``)."""
    from jax.experimental import topologies

    topo_name = SLICE_TOPOLOGIES.get(name, name)
    if ":" not in topo_name:
        raise ValueError(f"unknown topology {name!r}; use a slice name ({', '.join(SLICE_TOPOLOGIES)}) or "
                         "GENERATION:AxBxC like v5p:4x4x4")
    return topo_name, list(topologies.get_topology_desc(platform="tpu", topology_name=topo_name).devices)


def _hbm(topo_name: str) -> float | None:
    gib = HBM_GIB.get(topo_name.split(":")[0])
    return None if gib is None else gib * GIB


def _model_cfg(plan: AotPlan):
    cfg = configs.get(plan.model).dit
    changes = dict(remat_policy=plan.remat, attention_impl=plan.attention, sequence_parallel=plan.sequence_parallel,
                   dtype="bfloat16")
    if plan.depth_double:
        changes["depth_double"] = plan.depth_double
    if plan.depth_single:
        changes["depth_single"] = plan.depth_single
    return aot_cond.fit_mechanisms(cfg.replace(**changes))


def _batch(cfg, plan: AotPlan, batch: int) -> dict:
    """Abstract global batch of a resolved plan: latents, text, and the conditioning inputs of ``cfg``."""
    t = (plan.frames - 1) // 4 + 1
    s = jax.ShapeDtypeStruct
    out = {"latents": s((batch, t, plan.height // 8, plan.width // 8, cfg.in_channels), jnp.float32),
           "text_states": s((batch, plan.text_len, cfg.text_dim), jnp.float32),
           "text_mask": s((batch, plan.text_len), jnp.int32),
           "text_pooled": s((batch, cfg.pooled_dim), jnp.float32)}
    return out | aot_cond.cond_inputs(cfg, out["latents"], plan.ref_frames)


def _mesh(plan: AotPlan, devices):
    return make_mesh(data=plan.data, fsdp=plan.fsdp or -1, tensor=plan.tensor, sequence=plan.sequence,
                     devices=devices)


def _lower_train(cfg, plan: AotPlan, mesh, batch: dict):
    opt = optimizer_lib.OptimizerConfig()
    tx = optimizer_lib.make_optimizer(opt, 1000)
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), abstract_params(cfg))
    chosen = trainable_lib.select(params, trainable_lib.ALL)
    abstract = state_lib.abstract(params, tx, chosen)
    shardings = state_lib.shardings(abstract, logical_axes(cfg), mesh, tx, chosen)
    i2v = i2v_inputs(cfg)
    step = ShardedStep(make_train_step(HunyuanVideoDiT(cfg), loss_lib.FlowMatchingLoss(), opt, tx, chosen,
                                       make_cond=aot_cond.cond_fn(cfg, batch),
                                       clean_lead=None if i2v is None else i2v.clean_lead), mesh, shardings)
    null = {k: jax.ShapeDtypeStruct(batch[k].shape[1:], batch[k].dtype) for k in loss_lib.TEXT_KEYS}
    return step.lower(abstract, batch, null)


def _lower_sample(cfg, plan: AotPlan, mesh, batch: dict):
    """One DiT forward in bf16 (the work of one Euler step; with CFG the batch holds both branches), params
    stored bf16 and sharded like training."""
    import flax.linen as nn

    from hcjax.parallel.rules import LOGICAL_RULES
    from hcjax.parallel.shardings import tree_shardings, with_shardings
    from hcjax.training.sharded_step import tree_batch_shardings

    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16), abstract_params(cfg))
    p_sh = tree_shardings(params, logical_axes(cfg), mesh)
    b_sh = tree_batch_shardings(batch, mesh)
    params, batch = with_shardings(params, p_sh), with_shardings(batch, b_sh)
    b = batch["latents"].shape[0]
    timestep = jax.ShapeDtypeStruct((b,), jnp.float32, sharding=b_sh["text_pooled"])
    guidance = timestep if cfg.guidance_embed else None
    model = HunyuanVideoDiT(cfg)
    make_cond = aot_cond.cond_fn(cfg, batch)

    def forward(p, batch, t, g):
        with nn.logical_axis_rules(LOGICAL_RULES):
            x = batch["latents"].astype(jnp.bfloat16)
            return model.apply({"params": p}, x, t, batch["text_states"].astype(jnp.bfloat16), batch["text_mask"],
                               batch["text_pooled"].astype(jnp.bfloat16), guidance=g,
                               cond=None if make_cond is None else make_cond(batch, None))

    with jax.set_mesh(mesh):
        return jax.jit(forward).lower(params, batch, timestep, guidance)


def _flops(cfg, plan: AotPlan, video_tokens: int, tokens: int, latent_frames: int, batch: int) -> float:
    """Model FLOPs of the step: the blocks over reference + video tokens and the mechanisms' matmuls."""
    blocks = dit_config_flops(cfg, tokens, plan.text_len)
    forward = blocks + aot_cond.cond_flops(cfg, video_tokens, latent_frames)
    if plan.task == "train":   # the mechanisms take the same passes (forward, backward, remat) as the blocks
        return train_step_flops(cfg, tokens, plan.text_len, batch, plan.remat) * forward / blocks
    return batch * forward


def compile_plan(plan: AotPlan) -> AotReport:
    plan = plan.resolved()
    topo_name, devices = topology_devices(plan.topology)
    mesh = _mesh(plan, devices)
    cfg = _model_cfg(plan)
    degrees = dict(mesh.shape)
    batch_size = plan.batch_per_group * degrees["data"] * degrees["fsdp"] * (2 if plan.cfg_batch else 1)
    batch = _batch(cfg, plan, batch_size)
    t, h, w = batch["latents"].shape[1:4]
    per_frame = (h // cfg.patch_size[1]) * (w // cfg.patch_size[2])
    video_tokens = t * per_frame
    tokens = video_tokens + plan.ref_frames * per_frame
    start = time.perf_counter()
    lowered = (_lower_train if plan.task == "train" else _lower_sample)(cfg, plan, mesh, batch)
    compiled = lowered.compile()
    seconds = time.perf_counter() - start
    mem = compiled.memory_analysis()
    flops = _flops(cfg, plan, video_tokens, tokens, t, batch_size)
    return AotReport(plan=plan, topology_name=topo_name, chips=len(devices), mesh=degrees, tokens=tokens,
                     video_tokens=video_tokens, batch=batch_size, mechanisms=aot_cond.describe(cfg),
                     compile_seconds=seconds,
                     argument_bytes=int(mem.argument_size_in_bytes), output_bytes=int(mem.output_size_in_bytes),
                     alias_bytes=int(mem.alias_size_in_bytes), temp_bytes=int(mem.temp_size_in_bytes),
                     hbm_bytes=_hbm(topo_name), model_flops=flops,
                     splash_kernels="splash" in compiled.as_text())

