"""The VAE training run behind ``hcjax train`` with ``model.part = "vae"``: the preset's causal VAE trained with
``vae_step`` on pixel clips (``data.source = "procedural"``: the demo world, ``hcjax.demo.clips``), with the DiT
run's mesh, sharded step, Grain iterator, Orbax checkpoints (resumable), logs and export (a model directory holding
the VAE only; the DiT run then uses it through ``model.init_from``). ``model.init_from`` of a VAE run starts
from another VAE run's export (the demo trains on single frames first, then on clips).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from hcjax import configs
from hcjax.models import CausalVAE, logical_axes
from hcjax.parallel import distributed
from hcjax.models.params import abstract_params, init_params
from hcjax.parallel.shardings import with_shardings
from hcjax.training import optimizer as optimizer_lib
from hcjax.training import state as state_lib
from hcjax.training import trainable as trainable_lib
from hcjax.training.checkpoint import TrainCheckpointer
from hcjax.training.data import make_iterator
from hcjax.training.metrics import MetricsWindow
from hcjax.training.sharded_step import ShardedStep, batch_sharding
from hcjax.training.vae_step import VAELoss, initial_logvar, make_vae_step


@dataclasses.dataclass
class VAERun:
    config: ml_collections.ConfigDict
    preset: configs.Preset
    vae: configs.VAEConfig
    mesh: Any
    source: Any
    loss: VAELoss
    optim: optimizer_lib.OptimizerConfig
    tx: Any
    trainable: set       # every VAE param
    abstract_state: state_lib.TrainState
    shardings: state_lib.TrainState
    workdir: Path


def _source(c: ml_collections.ConfigDict):
    d = c.data
    if d.source != "procedural":
        raise ValueError(f"model.part vae trains on pixel clips: set --config.data.source=procedural (got "
                         f"{d.source!r})")
    from hcjax.demo.clips import ProceduralClips

    return ProceduralClips(d.procedural_records, frames=d.crop_frames, size=d.crop_size, seed=d.seed)


def build(config: ml_collections.ConfigDict) -> VAERun:
    """Checks and builds a VAE run; every error comes before any training work."""
    from hcjax.training.loop import _mesh

    c = config
    if c.train.distributed:
        distributed.initialize_from_config(c.train)
    preset = configs.get(c.model.preset)
    vae = preset.vae.replace(dtype=c.model.dtype, param_dtype="float32")
    loss = VAELoss(**c.vae_loss.to_dict())
    optim = optimizer_lib.OptimizerConfig(**c.optim.to_dict())
    if optim.accum_steps != 1 or optim.ema_decay > 0:
        raise ValueError("VAE training takes no optim.accum_steps or optim.ema_decay; set them to 1 and 0")
    mesh = _mesh(c)
    batch_sharding(mesh, c.train.global_batch)
    if c.model.init_from:
        from hcjax.convert.model_dir import read_model_info
        from hcjax.training import init_from

        info = read_model_info(c.model.init_from)
        init_from.check_preset(c.model.init_from, info["preset"], preset)
        if "vae" not in info["parts"]:
            raise ValueError(f"model.init_from {c.model.init_from} holds no VAE params (only "
                             f"{', '.join(info['parts'])}); give the export of a VAE run")
    source = _source(c)
    tx = optimizer_lib.make_optimizer(optim, c.train.steps)
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, np.float32), abstract_params(vae))
    everything = trainable_lib.select(params, ("*",))
    abstract = state_lib.abstract(params, tx, everything)
    shardings = state_lib.shardings(abstract, logical_axes(vae), mesh, tx, everything)
    return VAERun(c, preset, vae, mesh, source, loss, optim, tx, everything, abstract, shardings,
                  Path(c.train.workdir))


def _initial_params(run: VAERun) -> Any:
    """The VAE of ``model.init_from`` (e.g. an image-only stage), else a fresh init with the log-variance bias."""
    c = run.config
    if c.model.init_from:
        from hcjax.convert.model_dir import load_model_dir

        _, _, params = load_model_dir(c.model.init_from, parts=("vae",))
        return jax.tree.map(lambda x: np.asarray(x, np.float32), params)
    return initial_logvar(init_params(run.vae, c.train.seed), run.loss.init_logvar)


def run_training(run: VAERun) -> list[dict]:
    """The loop of a built VAE run; resumes from the run's latest checkpoint if there is one."""
    from hcjax.training.loop import _Log, cleared_export, step_loop

    c = run.config
    total = c.train.steps
    data = make_iterator(run.source, global_batch=c.train.global_batch, seed=c.data.seed)
    step_fn = ShardedStep(make_vae_step(CausalVAE(run.vae), run.loss, run.tx), run.mesh, run.shardings)
    schedule = optimizer_lib.learning_rate_schedule(run.optim, total)
    with TrainCheckpointer(run.workdir / "checkpoints", save_every=c.train.checkpoint_every,
                           keep=c.train.keep_checkpoints, model_config=run.vae) as ckpt:
        restored = ckpt.restore_latest(with_shardings(run.abstract_state, run.shardings), data)
        if restored is not None:
            state, start = restored
        else:
            fresh = _initial_params(run)
            state = jax.jit(lambda: state_lib.create(fresh, run.tx, run.trainable, c.train.seed),
                            out_shardings=run.shardings)()
            start = 0
        log = _Log(run, start, total)
        f, h, w = run.source.buckets[0]
        window = MetricsWindow(None, c.train.global_batch, f * h * w)
        state, records = step_loop(c, step_fn, state, data, {}, start, log, window, schedule, ckpt)
    if c.train.export and start < total:   # every process: each writes its shards of the params
        from hcjax.convert.model_dir import save_model_dir

        save_model_dir(cleared_export(run.workdir), run.preset.name, vae_params=state.params,
                       source="hcjax VAE training")
    return records
