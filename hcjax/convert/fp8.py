"""The official fp8 DiT checkpoints (``*_fp8.pt`` with ``*_fp8_map.pt``).

Every ``nn.Linear`` inside ``double_blocks`` / ``single_blocks`` stores its weight as ``float8_e4m3fn``; the map
holds one scalar scale per such module. The official fp8 linear computes with ``bf16(w) * bf16(scale)``
(rounded to bf16), so that product is what the plain state dict gets here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import ml_dtypes
import numpy as np

from hcjax.convert.io import CheckpointError, load_state_dict, to_numpy


def dequantize_fp8(state_dict: Mapping[str, Any], scales: Mapping[str, Any]) -> dict[str, Any]:
    """A plain state dict from an fp8 one: each ``{module}.weight`` named by ``scales`` becomes bf16."""
    missing = sorted(m for m in scales if f"{m}.weight" not in state_dict)
    if missing:
        raise CheckpointError(f"the fp8 scale map names {len(missing)} modules without a weight in the checkpoint, "
                              f"e.g. {missing[:3]}; is the map from the same checkpoint?")
    out = dict(state_dict)
    for module, scale in scales.items():
        w = to_numpy(state_dict[f"{module}.weight"])
        if w.dtype != ml_dtypes.float8_e4m3fn:
            raise CheckpointError(f"{module}.weight is {w.dtype}, not float8_e4m3fn; this is not an fp8 checkpoint")
        s = np.asarray(to_numpy(scale), np.float32).astype(ml_dtypes.bfloat16)
        out[f"{module}.weight"] = w.astype(ml_dtypes.bfloat16) * s
    return out


def load_fp8_state_dict(path: str | os.PathLike, map_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Loads ``*_fp8.pt`` and its scale map (by default the official neighbour ``*_fp8_map.pt``) and returns
    the dequantized state dict, ready for ``dit_from_torch``."""
    path = Path(path)
    map_path = Path(map_path) if map_path is not None else path.with_name(path.stem + "_map" + path.suffix)
    if not map_path.exists():
        raise CheckpointError(f"{map_path}: the fp8 scale map is missing; pass map_path= to name it")
    return dequantize_fp8(load_state_dict(path), load_state_dict(map_path))
