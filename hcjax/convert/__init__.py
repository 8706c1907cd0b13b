"""PyTorch checkpoints -> hcjax params. Strict: any mismatch raises one error listing all problems."""

from hcjax.convert.dit import dit_from_torch
from hcjax.convert.fp8 import dequantize_fp8, load_fp8_state_dict
from hcjax.convert.io import CheckpointError, load_pretrained_weights, load_state_dict, read_safetensors
from hcjax.convert.model_dir import ModelDirError, is_model_dir, load_model_dir, read_model_info, save_model_dir
from hcjax.convert.rules import CheckpointMismatch
from hcjax.convert.vae import vae_from_torch

__all__ = ["CheckpointError", "CheckpointMismatch", "ModelDirError", "dequantize_fp8", "dit_from_torch",
           "is_model_dir", "load_fp8_state_dict", "load_model_dir", "load_pretrained_weights", "load_state_dict",
           "read_model_info", "read_safetensors", "save_model_dir", "vae_from_torch"]
