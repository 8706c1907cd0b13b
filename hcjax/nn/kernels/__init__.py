"""Attention kernels behind hcjax.nn.attention: cuDNN, Pallas GPU (Triton) flash attention, TPU splash."""
