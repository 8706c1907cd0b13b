"""PyTorch checkpoints -> hcjax params. Strict: any mismatch raises one error listing all problems."""

from hcjax.convert.dit import dit_from_torch
from hcjax.convert.io import CheckpointError, load_state_dict, read_safetensors
from hcjax.convert.rules import CheckpointMismatch

__all__ = ["CheckpointError", "CheckpointMismatch", "dit_from_torch", "load_state_dict", "read_safetensors"]
