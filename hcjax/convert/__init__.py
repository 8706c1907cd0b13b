"""PyTorch checkpoints -> hcjax params. Strict: any mismatch raises one error listing all problems."""

from hcjax.convert.dit import dit_from_torch
from hcjax.convert.fp8 import dequantize_fp8, load_fp8_state_dict
from hcjax.convert.io import CheckpointError, load_state_dict, read_safetensors
from hcjax.convert.rules import CheckpointMismatch
from hcjax.convert.vae import vae_from_torch

__all__ = ["CheckpointError", "CheckpointMismatch", "dequantize_fp8", "dit_from_torch", "load_fp8_state_dict",
           "load_state_dict", "read_safetensors", "vae_from_torch"]
