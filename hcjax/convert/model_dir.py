"""A converted model on disk: ``DIR/hcjax_model.json`` plus one Orbax checkpoint of params per part
(``DIR/dit/``, ``DIR/vae/``). Written whole or not at all; read back with shapes and dtypes checked
against the preset."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np

from hcjax import configs
from hcjax.configs import Preset
from hcjax.parallel import distributed

FORMAT, VERSION, INFO_FILE = "hcjax-model", 1, "hcjax_model.json"
PARTS = ("dit", "vae")
_WRITER_OPTION = {"dit": "--src", "vae": "--vae-src"}


class ModelDirError(ValueError):
    """A model directory that cannot be written or read; the message names the path and the fix."""


def _checkpointer():
    import orbax.checkpoint as ocp  # lazy: only model directories need Orbax

    return ocp.StandardCheckpointer()


def _abstract(preset: Preset, part: str) -> dict:
    from hcjax.models import abstract_params

    return abstract_params(getattr(preset, part))


def _specs(tree: Any) -> dict[str, tuple[tuple, np.dtype]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in p): (tuple(x.shape), np.dtype(x.dtype))
            for p, x in leaves}


def _differences(got: Any, want: Any) -> list[str]:
    """Every key missing, unexpected, or with another shape/dtype in ``got`` than in ``want``."""
    g, w = _specs(got), _specs(want)
    out = [f"missing: {k}" for k in sorted(w.keys() - g.keys())]
    out += [f"unexpected: {k}" for k in sorted(g.keys() - w.keys())]
    out += [f"{k}: has {g[k][0]} {g[k][1]}, preset needs {w[k][0]} {w[k][1]}"
            for k in sorted(g.keys() & w.keys()) if g[k] != w[k]]
    return out


def _mismatch(what: str, preset: str, problems: list[str], fix: str) -> ModelDirError:
    return ModelDirError(f"{what} vs preset {preset!r}: {len(problems)} keys differ:\n  "
                         + "\n  ".join(problems) + f"\n{fix}")


@contextlib.contextmanager
def _new_folder(final: Path, fix: str) -> Iterator[Path]:
    """A temporary sibling of ``final`` to fill, renamed to ``final`` once the block succeeds (else removed).
    Refuses an existing ``final`` (``fix`` says what to do)."""
    if final.exists():
        raise ModelDirError(f"{final} exists already; {fix}")
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        yield tmp
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _restore_checked(ckptr, path: Path, target: Any, fix: str) -> Any:
    """The Orbax checkpoint at ``path`` restored into ``target`` after checking the stored tree against it
    (Orbax would silently reshape or cast); ``ModelDirError`` ending in ``fix`` otherwise."""
    try:  # Orbax raises many kinds of errors on a missing or damaged checkpoint
        stored = ckptr.metadata(path).item_metadata.tree
    except Exception as e:
        raise ModelDirError(f"{path}: unreadable Orbax checkpoint ({type(e).__name__}: {e}); {fix}") from None
    if problems := _differences(stored, target):
        raise ModelDirError(f"{path}: params differ from its config: {'; '.join(problems)}; {fix}")
    return ckptr.restore(path, _on_first_device(target))


def _on_first_device(target: Any) -> Any:
    """``target``'s shapes and dtypes on this process's first device: what a restore reads into, whatever devices
    wrote the checkpoint (a pod run's export samples on one GPU)."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), target)


def save_model_dir(path: str | os.PathLike, preset_name: str, dit_params: dict | None = None,
                   vae_params: dict | None = None, source: str = "") -> None:
    """Writes the given parts of ``preset_name`` to the new directory ``path``. Every tree is checked against
    the preset before anything is written; the directory appears only once complete. In a multi-host run every
    process calls it with the same (globally sharded) params; process 0 writes the shared files."""
    path = Path(path).absolute()
    preset = configs.get(preset_name)
    trees = {part: t for part, t in zip(PARTS, (dit_params, vae_params)) if t is not None}
    if not trees:
        raise ModelDirError(f"{path}: nothing to save; give dit_params and/or vae_params")
    for part, tree in trees.items():
        problems = _differences(tree, _abstract(preset, part))
        if problems:
            raise _mismatch(f"{part} params", preset_name, problems,
                            "Nothing was written. Convert with the preset that matches the checkpoint.")
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        raise ModelDirError(f"{path}: already exists and is not an empty directory; choose a new --dst or "
                            "delete it first")
    if jax.process_count() > 1:   # process-local arrays (e.g. a fresh VAE's) go as numpy, written by process 0
        trees = {part: jax.tree.map(_host_local_to_numpy, t) for part, t in trees.items()}
    tmp = path.parent / f".{path.name}.tmp-{distributed.shared_token()}"
    primary = distributed.is_primary()
    try:
        if primary:
            tmp.mkdir(parents=True)
        distributed.sync("model_dir:mkdir")
        with _checkpointer() as ckptr:   # every process writes its shards of sharded params
            for part, tree in trees.items():
                ckptr.save(tmp / part, tree)
            ckptr.wait_until_finished()
        distributed.sync("model_dir:saved")
        if primary:
            info = {"format": FORMAT, "version": VERSION, "preset": preset_name, "parts": list(trees),
                    "source": source}
            (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
            if path.exists():
                path.rmdir()  # empty, checked above
            tmp.rename(path)
        distributed.sync("model_dir:renamed")
    finally:
        if primary:
            shutil.rmtree(tmp, ignore_errors=True)


def _host_local_to_numpy(x: Any) -> Any:
    return np.asarray(x) if isinstance(x, jax.Array) and x.is_fully_addressable else x


def is_model_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding ``hcjax_model.json``."""
    return (Path(path) / INFO_FILE).is_file()


def read_model_info(path: str | os.PathLike) -> dict:
    """The validated ``hcjax_model.json`` of the model directory ``path``."""
    file = Path(path) / INFO_FILE
    redo = "convert the model again with `hcjax convert`"
    try:
        info = json.loads(file.read_text())
    except FileNotFoundError:
        raise ModelDirError(f"{path}: not an hcjax model directory (no {INFO_FILE}); {redo}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelDirError(f"{file}: unreadable ({e}); {redo}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ModelDirError(f"{file}: not an {FORMAT} file; {redo}")
    if info.get("version") != VERSION:
        raise ModelDirError(f"{file}: version {info.get('version')!r}, this hcjax reads version {VERSION}; "
                            f"use the hcjax that wrote it, or {redo}")
    try:
        configs.get(info.get("preset"))
    except (ValueError, TypeError) as e:
        raise ModelDirError(f"{file}: {e}; {redo}") from None
    parts = info.get("parts")
    if not isinstance(parts, list) or not parts or len(set(parts)) != len(parts) or not set(parts) <= set(PARTS):
        raise ModelDirError(f"{file}: 'parts' must be a non-empty list drawn from {list(PARTS)}, got {parts!r}; "
                            f"{redo}")
    return info


def load_model_dir(path: str | os.PathLike, parts: Sequence[str] = PARTS
                   ) -> tuple[Preset, dict | None, dict | None]:
    """``(preset, dit_params, vae_params)`` from a model directory, on this process's first device; parts not
    asked for are None. The stored shapes and dtypes are checked against the preset before restoring."""
    path = Path(path).absolute()
    if unknown := set(parts) - set(PARTS):
        raise ValueError(f"unknown parts {sorted(unknown)}; choose from {list(PARTS)}")
    info = read_model_info(path)
    preset = configs.get(info["preset"])
    absent = [p for p in parts if p not in info["parts"]]
    if absent:
        raise ModelDirError(f"{path}: holds no {' or '.join(absent)} params (only {', '.join(info['parts'])}); "
                            "convert again with " + " and ".join(_WRITER_OPTION[p] for p in absent)
                            + " to write " + ("them" if len(absent) > 1 else "it"))
    out: dict[str, dict] = {}
    with _checkpointer() as ckptr:
        for part in parts:
            target = _abstract(preset, part)
            try:  # Orbax raises many kinds of errors on a missing or damaged checkpoint
                meta = getattr(ckptr.metadata(path / part), "item_metadata", None)
                stored, why = getattr(meta, "tree", None), "no param metadata"
            except Exception as e:
                stored, why = None, f"{type(e).__name__}: {e}"
            if not isinstance(stored, Mapping):
                raise ModelDirError(f"{path / part}: unreadable Orbax checkpoint ({why}); convert the model again")
            problems = _differences(stored, target)
            if problems:  # Orbax would silently reshape or cast to the target
                raise _mismatch(f"{path / part}", preset.name, problems, "Convert the model again.")
            out[part] = ckptr.restore(path / part, _on_first_device(target))
    return preset, out.get("dit"), out.get("vae")
