"""Loading PyTorch checkpoints without unpickling code: safetensors (read here, memory-mapped) and ``.pt``
through ``torch.load(weights_only=True)``."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import ml_dtypes
import numpy as np

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
# Containers the official trainers wrap state dicts in, tried in this order.
_WRAPPER_KEYS = ("module", "state_dict", "model")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message says what to do."""


def load_state_dict(path: str | os.PathLike, key: str | None = None) -> dict[str, Any]:
    """Flat ``{name: array}`` from a ``.safetensors`` file, a sharded safetensors directory or its
    ``*.index.json``, or a ``.pt``/``.pth``/``.bin`` file (tensors only; wrappers like ``{"module": ...}``
    are unwrapped, ``key`` picks one explicitly, e.g. ``"ema"``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        return _load_safetensors_dir(path)
    if path.name.endswith(".index.json"):
        return _load_safetensors_index(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return _unwrap(_load_torch(path), key, path)
    raise CheckpointError(f"{path}: unknown checkpoint format; expected .safetensors, a directory of them, "
                          "an .index.json, or .pt/.pth")


PRETRAINED_WEIGHTS = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin")


def load_pretrained_weights(folder: str | os.PathLike) -> dict[str, Any]:
    """The state dict of a ``save_pretrained`` folder: ``model.safetensors`` (sharded or not) or
    ``pytorch_model.bin``."""
    for name in PRETRAINED_WEIGHTS:
        if (Path(folder) / name).exists():
            return load_state_dict(Path(folder) / name)
    raise CheckpointError(f"{folder}: holds none of {', '.join(PRETRAINED_WEIGHTS)}")


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Memory-mapped arrays of a safetensors file (bf16 / fp8 as ``ml_dtypes``), after checking the header
    against the file size so that a truncated file fails here, whole."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: {size} bytes is too short to be a safetensors file; copy it again")
        header_len = int.from_bytes(prefix, "little")
        if 8 + header_len > size:
            raise CheckpointError(f"{path}: truncated (header needs {header_len} bytes, file has {size}); "
                                  "the file is incomplete, copy or download it again")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: not a safetensors file (unreadable header: {e})") from None
    header.pop("__metadata__", None)
    start = 8 + header_len
    need = max((info["data_offsets"][1] for info in header.values()), default=0)
    if start + need > size:
        raise CheckpointError(f"{path}: truncated ({start + need} bytes expected, {size} present); the file is "
                              "incomplete, copy or download it again")
    raw = np.memmap(path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
    out = {}
    for name, info in header.items():
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        lo, hi = info["data_offsets"]
        out[name] = raw[start + lo:start + hi].view(_SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def _load_safetensors_index(path: Path) -> dict[str, np.ndarray]:
    weight_map = json.loads(path.read_text())["weight_map"]
    out = {}
    for shard in sorted(set(weight_map.values())):
        tensors = read_safetensors(path.parent / shard)
        out.update({k: v for k, v in tensors.items() if weight_map.get(k) == shard})
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} tensors listed in the index are absent from their shards, "
                              f"e.g. {missing[:3]}; the shards are incomplete")
    return out


def _load_safetensors_dir(path: Path) -> dict[str, np.ndarray]:
    indexes = sorted(path.glob("*.safetensors.index.json"))
    if len(indexes) == 1:
        return _load_safetensors_index(indexes[0])
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: directory holds no .safetensors files")
    out = {}
    for f in files:
        out.update(read_safetensors(f))
    return out


def _load_torch(path: Path) -> Any:
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading .pt files needs PyTorch (pip install torch), or convert the file "
                              "to safetensors") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        found = re.findall(r"Unsupported global: GLOBAL (\S+)", str(e))
        raise CheckpointError(
            f"{path}: holds pickled Python objects ({found[0] if found else 'not tensors'}), not only tensors; "
            "hcjax never unpickles code. Re-save the state dict alone (torch.save(sd)) or as safetensors, "
            "in an environment you trust.") from None
    except RuntimeError as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from None


def _unwrap(obj: Any, key: str | None, path: Path) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    if key is not None:
        if key not in obj:
            raise CheckpointError(f"{path}: no entry {key!r}; entries: {sorted(obj)[:10]}")
        obj = obj[key]
    else:
        for wrapper in _WRAPPER_KEYS:
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    bad = [k for k, v in obj.items() if not hasattr(v, "shape")]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {bad[:5]}; pass key=... to pick the "
                              "state dict inside")
    return dict(obj)


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view of a numpy array or CPU torch tensor, keeping bf16 / fp8 (as ``ml_dtypes``)."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("torch"):
        import torch

        x = x.detach().cpu().contiguous()
        special = {torch.bfloat16: (torch.int16, ml_dtypes.bfloat16),
                   torch.float8_e4m3fn: (torch.uint8, ml_dtypes.float8_e4m3fn),
                   torch.float8_e5m2: (torch.uint8, ml_dtypes.float8_e5m2)}
        if x.dtype in special:
            raw, dtype = special[x.dtype]
            return x.view(raw).numpy().view(dtype)
        return x.numpy()
    return np.asarray(x)
