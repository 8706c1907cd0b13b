"""The training run behind ``hcjax train``: everything is built and checked first (config, mesh, data, model,
checkpoint compatibility), then the loop runs the sharded step, logs, and checkpoints asynchronously; a killed
run started again with the same config resumes from its last checkpoint to the same losses.

Logs go to ``WORKDIR/metrics.jsonl`` (one line per logged step), TensorBoard (``WORKDIR/tb``) and a progress
bar; checkpoints to ``WORKDIR/checkpoints``; the final params (their EMA where ``optim.ema_decay > 0``) to
``WORKDIR/export`` (a model directory).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from hcjax import configs
from hcjax.models import HunyuanVideoDiT, logical_axes
from hcjax.models.flops import train_step_flops
from hcjax.models.params import abstract_params, init_params
from hcjax.parallel import distributed
from hcjax.parallel.mesh import make_mesh
from hcjax.parallel.shardings import with_shardings
from hcjax.training import init_from
from hcjax.training import loss as loss_lib
from hcjax.training import optimizer as optimizer_lib
from hcjax.training import state as state_lib
from hcjax.training import trainable as trainable_lib
from hcjax.training.checkpoint import TrainCheckpointer, export_params
from hcjax.training.cond_inputs import conditioning_inputs
from hcjax.training.custom_cond import CondSettings, CustomInputs
from hcjax.training.data import make_iterator
from hcjax.training.data_source import check_dataset, open_dataset
from hcjax.training.data_synthetic import SyntheticSource
from hcjax.training.humo_cond import HumoInputs
from hcjax.training.metrics import MetricsWindow
from hcjax.training.sharded_step import ShardedStep, batch_sharding
from hcjax.training.step import make_train_step
from hcjax.training.task_mixer import TaskMixer


@dataclasses.dataclass
class Run:
    """Everything a run needs, built and checked before the first step."""

    config: ml_collections.ConfigDict
    preset: configs.Preset
    dit: configs.DiTConfig
    mesh: Any
    source: Any
    null_text: dict
    loss: loss_lib.FlowMatchingLoss
    optim: optimizer_lib.OptimizerConfig
    tx: Any
    trainable: set
    abstract_state: state_lib.TrainState
    shardings: state_lib.TrainState
    workdir: Path
    cond: CustomInputs | None = None     # the conditioning mechanisms' inputs (None: the model has none)
    tasks: TaskMixer | None = None       # HuMo's task mix of the batches (``tasks.mix``)


def _dit_config(c: ml_collections.ConfigDict) -> tuple[configs.Preset, configs.DiTConfig]:
    preset = configs.get(c.model.preset)
    changes = dict(dtype=c.model.dtype, param_dtype="float32", remat_policy=c.model.remat,
                   attention_impl=c.model.attention, sequence_parallel=c.model.sequence_parallel)
    if c.model.depth_double > 0:
        changes["depth_double"] = c.model.depth_double
    if c.model.depth_single > 0:
        changes["depth_single"] = c.model.depth_single
    return preset, preset.dit.replace(**changes)


def _mesh(c: ml_collections.ConfigDict):
    m = c.mesh
    try:
        return make_mesh(data=m.data, fsdp=m.fsdp if m.fsdp > 0 else -1, tensor=m.tensor, sequence=m.sequence,
                         dcn_data=m.dcn_data, dcn_fsdp=m.dcn_fsdp)
    except ValueError as e:
        raise ValueError(f"{e} (set --config.mesh.*)") from None


def _source(c: ml_collections.ConfigDict, dit: configs.DiTConfig):
    d = c.data
    if d.source == "synthetic":
        return SyntheticSource.for_model(dit, d.synthetic_records, latent_shapes=(tuple(d.synthetic_shape),),
                                         text_len=d.synthetic_text_len, seed=d.seed)
    if d.source == "tfds":
        if not d.path:
            raise ValueError("data.source is tfds but data.path is empty; pass --config.data.path=DATASET_DIR "
                             "(made by tools/precompute_dataset.py)")
        return open_dataset(d.path, d.split)
    raise ValueError(f"data.source {d.source!r} must be synthetic or tfds")


def null_text(source) -> dict:
    """The empty prompt's embedding for text dropout: the dataset's own if it has one, else zero states with
    only the first token valid."""
    own = getattr(source, "null_text", None)
    if callable(own):
        return own()
    s = source.spec
    return {"text_states": np.zeros((s.text_len, s.text_dim), np.float32),
            "text_mask": (np.arange(s.text_len) == 0).astype(np.int32),
            "text_pooled": np.zeros((s.pooled_dim,), np.float32)}


def build(config: ml_collections.ConfigDict) -> Run:
    """Checks and builds a run; every error here comes before any training work."""
    c = config
    if c.model.part != "dit":
        raise ValueError(f"model.part {c.model.part!r}: loop.build trains the DiT (dit); use vae_loop.build for vae")
    if c.train.distributed:
        distributed.initialize_from_config(c.train)
    preset, dit = _dit_config(c)
    loss = loss_lib.FlowMatchingLoss(**c.loss.to_dict())
    optim = optimizer_lib.OptimizerConfig(**c.optim.to_dict())
    if c.train.global_batch % optim.accum_steps:
        raise ValueError(f"train.global_batch {c.train.global_batch} is not a multiple of optim.accum_steps "
                         f"{optim.accum_steps}")
    mesh = _mesh(c)
    batch_sharding(mesh, c.train.global_batch)
    if c.model.init_from:
        from hcjax.convert.model_dir import read_model_info

        init_from.check_preset(c.model.init_from, read_model_info(c.model.init_from)["preset"], preset)
    cond = conditioning_inputs(dit, CondSettings(**c.cond.to_dict()))
    tasks = _task_mixer(c, cond)
    source = _source(c, dit)
    check_dataset(source, dit)
    if cond is not None:
        cond.check_source(source)
    tx = optimizer_lib.make_optimizer(optim, c.train.steps)
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, np.float32), abstract_params(dit))
    chosen = trainable_lib.select(params, tuple(c.train.trainable))
    abstract = state_lib.abstract(params, tx, chosen, ema=optim.ema_decay > 0)
    shardings = state_lib.shardings(abstract, logical_axes(dit), mesh, tx, chosen)
    return Run(c, preset, dit, mesh, source, null_text(source), loss, optim, tx, chosen, abstract, shardings,
               Path(c.train.workdir), cond, tasks)


def _task_mixer(c: ml_collections.ConfigDict, cond) -> TaskMixer | None:
    """``tasks.mix``: HuMo's progressive task mix, for a model whose inputs read the batch's ``task``."""
    if not c.tasks.mix:
        return None
    if not isinstance(cond, HumoInputs):
        raise ValueError("tasks.mix draws HuMo's training tasks, but this model has none of HuMo's mechanisms; "
                         "set --config.tasks.mix=False or train a humo preset")
    return TaskMixer(**{k: v for k, v in c.tasks.to_dict().items() if k != "mix"})


def _fresh_state(run: Run) -> state_lib.TrainState:
    c = run.config
    ema = run.optim.ema_decay > 0
    from hcjax.convert.model_dir import load_model_dir, read_model_info

    if c.model.init_from and "dit" in read_model_info(c.model.init_from)["parts"]:
        _, params, _ = load_model_dir(c.model.init_from, parts=("dit",))
        params = jax.tree.map(np.asarray, params)   # a host copy (the same on every process), which jit shards

        def create(p):   # params the directory lacks (an addable mechanism's) are freshly initialised
            return state_lib.create(init_from.complete(p, run.dit, c.train.seed), run.tx, run.trainable,
                                    c.train.seed, ema)

        return jax.jit(create, out_shardings=run.shardings)(params)

    def create_fresh():
        return state_lib.create(init_params(run.dit, c.train.seed), run.tx, run.trainable, c.train.seed, ema)

    return jax.jit(create_fresh, out_shardings=run.shardings)()


def _tokens(run: Run) -> int:
    pt, ph, pw = run.dit.patch_size
    return int(max(t // pt * (h // ph) * (w // pw) for t, h, w in run.source.buckets))


class _Log:
    """metrics.jsonl (cut back to the resumed step), TensorBoard and the progress bar."""

    def __init__(self, run: Run, start: int, total: int):
        self.primary = distributed.is_primary()
        self.path = run.workdir / "metrics.jsonl"
        self.tb = self.bar = None
        if not self.primary:
            return
        run.workdir.mkdir(parents=True, exist_ok=True)
        if start:
            print(f"hcjax train: resuming from the checkpoint of step {start}", flush=True)
        kept = []
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= start]
        self.path.write_text("".join(line + "\n" for line in kept))
        if run.config.train.tensorboard:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(run.workdir / "tb"))
        if run.config.train.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc=run.config.name, unit="step")

    def write(self, step: int, record: dict) -> None:
        if not self.primary:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **record}) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                self.tb.add_scalar(f"train/{k}", v, step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}")

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()


def cleared_export(workdir: Path) -> Path:
    """``WORKDIR/export``, an earlier export there removed (a resumed run that finishes writes it anew; all
    processes call it, process 0 removes)."""
    export = workdir / "export"
    if distributed.is_primary() and export.exists():
        import shutil

        shutil.rmtree(export)
    distributed.sync("export:cleared")
    return export


def step_loop(c: ml_collections.ConfigDict, step_fn, state, data, extra, start: int, log: _Log,
              window: MetricsWindow, schedule, ckpt: TrainCheckpointer):
    """Steps ``start .. c.train.steps``: ``step_fn(state, batch, extra)``, logs every ``log_every`` steps,
    checkpoints every ``checkpoint_every`` and at the end; returns the final state and the logged records (the DiT
    and the VAE runs share it)."""
    total, records = c.train.steps, []
    try:
        for step in range(start, total):
            state, metrics = step_fn(state, next(data), extra)
            window.add(metrics)
            done = step + 1
            if done % c.train.log_every == 0 or done == total:
                record = window.report() | {"learning_rate": float(schedule(step))}
                log.write(done, record)
                records.append({"step": done, **record})
            if done % c.train.checkpoint_every == 0 or done == total:
                ckpt.save(done, state, data, force=True)
            log.advance()
    finally:
        log.close()
    ckpt.wait()
    return state, records


def trainer(config: ml_collections.ConfigDict):
    """The module (``build`` and ``run_training``) that trains ``config``'s ``model.part``: this one for the DiT,
    ``vae_loop`` for the VAE."""
    if config.model.part == "vae":
        from hcjax.training import vae_loop

        return vae_loop
    if config.model.part != "dit":
        raise ValueError(f"model.part {config.model.part!r}: use dit or vae")
    return sys.modules[__name__]


def train(config: ml_collections.ConfigDict) -> list[dict]:
    """Runs (or resumes) the training of ``config`` (the DiT, or the VAE with ``model.part = "vae"``); returns the
    logged records."""
    t = trainer(config)
    return t.run_training(t.build(config))


def run_training(run: Run) -> list[dict]:
    """The loop of a built run (``build``); resumes from the run's latest checkpoint if there is one."""
    c = run.config
    total = c.train.steps
    data = make_iterator(run.source, global_batch=c.train.global_batch, seed=c.data.seed, task_mixer=run.tasks)
    make_cond = None if run.cond is None else run.cond.make_cond
    aux_loss, clean_lead = getattr(run.cond, "aux_loss", None), getattr(run.cond, "clean_lead", None)
    step_fn = ShardedStep(make_train_step(HunyuanVideoDiT(run.dit), run.loss, run.optim, run.tx, run.trainable,
                                          make_cond, aux_loss, clean_lead), run.mesh, run.shardings)
    schedule = optimizer_lib.learning_rate_schedule(run.optim, total)
    with TrainCheckpointer(run.workdir / "checkpoints", save_every=c.train.checkpoint_every,
                           keep=c.train.keep_checkpoints, model_config=run.dit) as ckpt:
        restored = ckpt.restore_latest(with_shardings(run.abstract_state, run.shardings), data)
        state, start = restored if restored is not None else (_fresh_state(run), 0)
        log = _Log(run, start, total)
        tokens = _tokens(run)
        window = MetricsWindow(train_step_flops(run.dit, tokens, run.source.spec.text_len, c.train.global_batch,
                                                run.dit.remat_policy), c.train.global_batch, tokens)
        state, records = step_loop(c, step_fn, state, data, run.null_text, start, log, window, schedule, ckpt)
    if c.train.export and start < total:   # every process: each writes its shards of the params
        export = cleared_export(run.workdir)
        params = state_lib.final_params(state, run.trainable)
        if c.model.init_from:
            export_params(export, run.preset.name, params, base_model_dir=c.model.init_from)
        else:  # a model trained from scratch comes with a freshly initialised VAE
            export_params(export, run.preset.name, params, vae_params=init_params(run.preset.vae, 0))
    return records

