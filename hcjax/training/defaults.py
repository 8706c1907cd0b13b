"""The default experiment config every ``experiments/configs/*.py`` starts from; its keys are the only ones
``--config.key=value`` accepts."""

from __future__ import annotations

import ml_collections

from hcjax.training.custom_cond import CondSettings
from hcjax.training.loss import FlowMatchingLoss
from hcjax.training.optimizer import OptimizerConfig
from hcjax.training.task_mixer import TaskMixer
from hcjax.training.vae_step import VAELoss


def _from_dataclass(obj) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({k: getattr(obj, k) for k in obj.__dataclass_fields__})


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "run"
    c.model = ml_collections.ConfigDict(dict(
        preset="hunyuan-video-t2v",
        part="dit",                 # dit (flow matching) | vae (reconstruction + KL: training.vae_loop)
        init_from="",               # a model directory (``hcjax convert``) to fine-tune; "" = fresh init; one
                                    # holding only a VAE: a fresh DiT, exported with that VAE (the demo model)
        dtype="bfloat16",           # compute dtype; params and optimizer state stay fp32
        remat="full",               # none | full | save_dots | offload
        attention="auto",
        sequence_parallel="none",   # none | ulysses | ring (over the mesh's ``sequence`` axis)
        depth_double=-1,            # > 0 overrides the preset (smoke runs of the full width)
        depth_single=-1,
    ))
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1, sequence=1, dcn_data=1, dcn_fsdp=1))
    c.data = ml_collections.ConfigDict(dict(
        source="synthetic",          # synthetic | tfds (an ArrayRecord dataset of tools/precompute_dataset.py)
        path="",
        split="train",
        synthetic_records=64,
        synthetic_shape=(2, 4, 6),   # latent (T, H, W) of the synthetic clips
        synthetic_text_len=8,
        procedural_records=2000,     # source procedural (VAE runs): clips of the demo world (hcjax.demo.clips)
        crop_frames=5,
        crop_size=64,
        seed=0,
    ))
    c.loss = _from_dataclass(FlowMatchingLoss())
    c.vae_loss = _from_dataclass(VAELoss())   # model.part vae
    c.cond = _from_dataclass(CondSettings())   # condition dropout of models with mechanisms (custom_cond)
    # HuMo's progressive task mix (training.task_mixer): off, or the audio-visual-sync share per global batch
    c.tasks = ml_collections.ConfigDict(dict(mix=False, **_from_dataclass(TaskMixer())))
    c.optim = _from_dataclass(OptimizerConfig())
    c.train = ml_collections.ConfigDict(dict(
        steps=1000,
        global_batch=8,
        seed=0,
        trainable=("*",),            # fnmatch patterns over param paths (hcjax.training.trainable)
        workdir="runs/run",
        log_every=10,
        checkpoint_every=200,
        keep_checkpoints=3,
        export=True,                 # write the final params as a model directory (workdir/export)
        tensorboard=True,
        progress=True,
        distributed=False,           # jax.distributed.initialize() first (multi-host pods)
        coordinator="",              # with distributed, off TPU pods / SLURM / MPI: "HOST:PORT" of process 0,
        num_processes=0,             # the number of processes
        process_id=-1,               # and this one's index (all three, or none to detect them)
    ))
    return c


def fine_tune(c: ml_collections.ConfigDict, name: str, preset: str) -> ml_collections.ConfigDict:
    """The settings the fine-tuning configs share: precomputed TFDS data, shift 1, text dropout 0.1, AdamW at
    1e-5 after 100 warm-up steps, weight decay 0.01, global batch 8, workdir ``runs/NAME``."""
    c.name, c.model.preset = name, preset
    c.data.source = "tfds"
    c.loss.shift = 1.0
    c.loss.text_dropout = 0.1
    c.optim.learning_rate = 1e-5
    c.optim.warmup_steps = 100
    c.optim.weight_decay = 0.01
    c.train.global_batch = 8
    c.train.workdir = f"runs/{name}"
    return c


def tiny(c: ml_collections.ConfigDict, preset: str) -> ml_collections.ConfigDict:
    """A config's CPU smoke-run variant: the tiny ``preset`` in fp32 on synthetic data, 300 steps of batch 4 at
    3e-3, workdir ``runs/NAME-tiny``."""
    c.name += "-tiny"
    c.model.preset = preset
    c.model.dtype = "float32"
    c.model.remat = "none"
    c.data.source = "synthetic"
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 10
    c.optim.weight_decay = 0.0
    c.train.steps = 300
    c.train.global_batch = 4
    c.train.log_every = 10
    c.train.checkpoint_every = 50
    c.train.workdir = f"runs/{c.name}"
    return c
