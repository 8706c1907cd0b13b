"""Training checkpoints with Orbax: the train state (any pytree of arrays, sharded or not), the data iterator's
state and a model fingerprint, saved asynchronously every ``save_every`` steps, the last ``keep`` kept. Restores go
straight into the target shardings after a metadata-only check that the checkpoint is of the same model.

A save killed at any moment leaves only an Orbax temporary directory (``<step>.orbax-checkpoint-tmp-*``), which
is never listed as a step and is removed before the next save; the latest *finalised* step is what resumes.
Typed PRNG keys (``jax.random.key``) and raw key data (uint32) both round-trip bit-identically.

``export_params`` writes trained DiT params as a new hcjax model directory for ``hcjax sample --model``."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np
import orbax.checkpoint as ocp

from hcjax.parallel import distributed

FORMAT, VERSION = "hcjax-train-checkpoint", 1
STATE, DATA, MODEL = "state", "data", "model"  # the items of one step
# Config fields that change neither params nor the meaning of the state: a resume may change them.
EXECUTION_FIELDS = ("dtype", "scan_layers", "remat_policy", "attention_impl", "sequence_parallel", "sequence_axis")
_MAX_LISTED = 20


class DataIterator(Protocol):
    def get_state(self) -> dict: ...

    def set_state(self, state: dict) -> None: ...


def tree_spec(tree: Any) -> dict[str, list]:
    """``{"path/to/leaf": [shape, dtype]}`` of every array (or ``ShapeDtypeStruct``) leaf of ``tree``."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p, simple=True, separator="/"): [list(np.shape(x)), str(getattr(x, "dtype", None))]
            for p, x in leaves}


def _config_dict(config: Any) -> dict | None:
    """``config`` (a dataclass or mapping) as plain JSON data, without ``EXECUTION_FIELDS``."""
    if config is None:
        return None
    raw = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return json.loads(json.dumps({k: v for k, v in raw.items() if k not in EXECUTION_FIELDS}, default=str))


def _differences(stored: dict, now: dict, what: str) -> list[str]:
    out = [f"{what} {k}: only in the checkpoint" for k in sorted(stored.keys() - now.keys())]
    out += [f"{what} {k}: not in the checkpoint" for k in sorted(now.keys() - stored.keys())]
    return out + [f"{what} {k}: checkpoint has {stored[k]}, now {now[k]}"
                  for k in sorted(stored.keys() & now.keys()) if stored[k] != now[k]]


def _allgather_json(obj: Any) -> list:
    """``obj`` of every process, in process order (JSON data; one process: ``[obj]``)."""
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    raw = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.int32(raw.size))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:raw.size] = raw
    rows = np.asarray(multihost_utils.process_allgather(padded))
    return [json.loads(bytes(row[:n])) for row, n in zip(rows, sizes)]


class TrainCheckpointer:
    """Saves and restores training checkpoints under ``directory`` (one Orbax step folder per save).

    ``model_config`` (a config dataclass or dict) is stored with each checkpoint and compared on restore, less
    ``EXECUTION_FIELDS``. Use as a context manager, or call ``close()``; ``wait()`` blocks until saves are durable."""

    def __init__(self, directory: str | os.PathLike, save_every: int = 1000, keep: int = 3,
                 model_config: Any = None, async_save: bool = True):
        self.directory = Path(directory).absolute()
        self.model_config = _config_dict(model_config)
        options = ocp.CheckpointManagerOptions(save_interval_steps=save_every, max_to_keep=keep,
                                               cleanup_tmp_directories=True, enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state: Any, data_iterator: DataIterator | None = None, force: bool = False) -> bool:
        """Starts saving ``state`` at ``step`` if it is a save step (or ``force``); returns whether it saves. The
        arrays are copied to host before this returns (the caller may then donate them) and written in the
        background. Every process must call it (the iterator states of all processes are kept)."""
        if not force and not self.manager.should_save(step):
            return False
        meta = {"format": FORMAT, "version": VERSION, "step": int(step), "config": self.model_config,
                "tree": tree_spec(state)}
        items = {STATE: ocp.args.StandardSave(state), MODEL: ocp.args.JsonSave(meta)}
        if data_iterator is not None:  # a JSON round trip: a snapshot now, and an early error if not JSON data
            states = json.loads(json.dumps(_allgather_json(data_iterator.get_state())))
            items[DATA] = ocp.args.JsonSave({"process_count": len(states), "states": states})
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def latest_step(self) -> int | None:
        """The newest step on disk or being saved by this checkpointer, or None (unfinished saves of an earlier
        run are never listed)."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """The steps on disk or being saved by this checkpointer, oldest first."""
        return sorted(self.manager.all_steps())

    def check(self, step: int, abstract_state: Any) -> None:
        """Raises one ``ValueError`` listing the differences (model config, state keys, shapes, dtypes) between
        the checkpoint at ``step`` and ``abstract_state``. Reads only the small JSON metadata item."""
        where = self.directory / str(step)
        fix = (f"Point --config.train.workdir at this model's own run, or start fresh from an empty "
               f"directory (or delete {self.directory}).")
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(**{MODEL: ocp.args.JsonRestore()}))[MODEL]
        except Exception as e:  # Orbax raises many kinds of errors on a missing or damaged item
            raise ValueError(f"{where}: no readable hcjax training metadata ({type(e).__name__}: {e}). {fix}") \
                from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{where}: not an hcjax training checkpoint. {fix}")
        problems = []
        if meta.get("config") is not None and self.model_config is not None:
            problems += _differences(meta["config"], self.model_config, "config")
        problems += _differences(meta["tree"], tree_spec(abstract_state), "state")
        if problems:
            listed = problems[:_MAX_LISTED] + ([f"... and {len(problems) - _MAX_LISTED} more"]
                                               if len(problems) > _MAX_LISTED else [])
            raise ValueError(f"{where} is a checkpoint of another model or state: {len(problems)} differences:\n  "
                             + "\n  ".join(listed) + f"\n{fix}")

    def restore(self, step: int, abstract_state: Any, data_iterator: DataIterator | None = None) -> Any:
        """The state saved at ``step``, restored into ``abstract_state``: a pytree of ``jax.ShapeDtypeStruct``
        whose ``.sharding`` is where each array goes (each device reads its own shards). Checks the model first
        (``check``) and sets ``data_iterator``'s state. Waits for this checkpointer's pending saves first."""
        self.wait()
        self.check(step, abstract_state)
        items = {STATE: ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            if not (self.directory / str(step) / DATA).exists():
                raise ValueError(f"{self.directory / str(step)} holds no data iterator state (saved without "
                                 "one); resume without an iterator, or start fresh")
            items[DATA] = ocp.args.JsonRestore()
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        if data_iterator is not None:
            data = out[DATA]
            if data["process_count"] != jax.process_count():
                raise ValueError(f"the checkpoint at step {step} holds data iterator states of "
                                 f"{data['process_count']} processes, this run has {jax.process_count()}; "
                                 "resume with as many processes, or start fresh")
            data_iterator.set_state(data["states"][jax.process_index()])
        return out[STATE]

    def restore_latest(self, abstract_state: Any, data_iterator: DataIterator | None = None
                       ) -> tuple[Any, int] | None:
        """``(state, step)`` of the newest finalised checkpoint (see ``restore``), or None when there is none."""
        self.wait()
        step = self.latest_step()
        return None if step is None else (self.restore(step, abstract_state, data_iterator), step)

    def wait(self) -> None:
        """Blocks until every started save is written and finalised."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self) -> "TrainCheckpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def export_params(directory: str | os.PathLike, preset_name: str, dit_params: Any, vae_params: Any = None,
                  base_model_dir: str | os.PathLike | None = None, source: str = "hcjax training") -> Path:
    """Writes trained DiT params (cast to the preset's param dtypes) as the new model directory ``directory``, for
    ``hcjax sample --model``. The VAE params are ``vae_params`` or, if None, those of ``base_model_dir``, whose
    text and audio encoders are copied too. The directory appears whole or not at all. In a multi-host run every
    process calls it with the same globally sharded params (each writes its shards; process 0 the rest)."""
    from hcjax import configs
    from hcjax.convert.model_dir import ModelDirError, load_model_dir, save_model_dir
    from hcjax.models import abstract_params

    final = Path(directory).absolute()
    if final.exists():
        raise ModelDirError(f"{final} exists already; choose a new export directory or delete it first")
    want = abstract_params(configs.get(preset_name).dit)
    same_tree = jax.tree.structure(want) == jax.tree.structure(dit_params)  # else save_model_dir lists them
    if same_tree and any(x.dtype != w.dtype for x, w in zip(jax.tree.leaves(dit_params), jax.tree.leaves(want))):
        dit_params = jax.jit(lambda t: jax.tree.map(lambda x, w: x.astype(w.dtype), t, want))(dit_params)
    if vae_params is None and base_model_dir is not None:
        vae_params = load_model_dir(base_model_dir, parts=("vae",))[2]
    tmp = final.parent / f".{final.name}.export-{distributed.shared_token()}"
    primary = distributed.is_primary()
    try:
        save_model_dir(tmp, preset_name, dit_params, vae_params, source=source)
        if primary:
            if base_model_dir is not None:
                from hcjax.convert import audio_encoder_dir, text_encoder_dir

                for folder in (text_encoder_dir.FOLDER, audio_encoder_dir.FOLDER):
                    if (Path(base_model_dir) / folder).is_dir():
                        shutil.copytree(Path(base_model_dir) / folder, tmp / folder)
            tmp.rename(final)
        distributed.sync("export:renamed")
    finally:
        if primary:
            shutil.rmtree(tmp, ignore_errors=True)
    return final
