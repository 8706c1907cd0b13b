"""Logical axis names of hcjax params and activations.

Every param carries one name per dimension (``nn.with_logical_partitioning``); a rules table maps names to
mesh axes (``data``, ``fsdp``, ``tensor``, ``sequence``). Without a mesh the names change nothing.
"""

PARAM_AXES = {
    "layers": "stacked blocks of one stack (double / single / refiner)",
    "embed": "the DiT hidden size (3072)",
    "mlp": "MLP hidden units (12288)",
    "qkv": "fused q | k | v projection outputs (3 x 3072)",
    "qkv_mlp": "single-block linear1 outputs: q | k | v | mlp (21504)",
    "attn": "attention output features entering a projection (heads x head_dim)",
    "attn_mlp": "single-block linear2 inputs: attention | mlp (15360)",
    "modulation": "adaLN modulation outputs (factor x 3072)",
    "head_dim": "per-head features (128): qk-norm scales",
    "freq": "timestep sinusoid features (256)",
    "text_embed": "LLM text state features (4096)",
    "pooled_embed": "CLIP pooled text features (768)",
    "latent_channels": "VAE latent channels entering the patch embedding (16)",
    "patch_t": "patch kernel, time",
    "patch_h": "patch kernel, height",
    "patch_w": "patch kernel, width",
    "out_patch": "final-layer outputs: patch volume x latent channels (64)",
    "conv_t": "VAE convolution kernel, time",
    "conv_h": "VAE convolution kernel, height",
    "conv_w": "VAE convolution kernel, width",
    "conv_in": "VAE input channels of a convolution or linear layer",
    "conv_out": "VAE output channels (and GroupNorm channels)",
    "vocab": "text encoder vocabulary (token embeddings)",
    "position": "learned position embeddings of the CLIP / Whisper encoders",
    "kv": "grouped key / value projection outputs (kv heads x head_dim)",
    "conv_k": "1-D convolution kernel width (Whisper's front end)",
    "mel": "log-mel frequency bins entering Whisper",
    "image_channels": "RGB channels entering a vision patch embedding",
    "audio_in": "flattened Whisper window features entering the audio projection (10 x 5 x 384)",
    "audio_hidden": "audio projection / audio cross-attention width (1024)",
    "audio_kv": "audio cross-attention key | value outputs (2 x 1024)",
    "audio_tokens": "audio tokens per video frame x hidden size (4 x 3072)",
    "audio_embed": "HuMo's audio token width (1536)",
    "mask_in": "the mask predictor's input: concatenated tap features (taps x 3072)",
    "mask_hidden": "the mask predictor's hidden width (256)",
    "mask_out": "the mask predictor's logits per token: the patch volume (4)",
}

ACTIVATION_AXES = {
    "activation_batch": "samples",
    "activation_length": "tokens",
    "activation_embed": "hidden features",
}

# Logical name -> mesh axes. Weights are split over ``fsdp`` and ``sequence`` on their hidden (``embed``) side
# (ZeRO-3 over every chip that does not split heads: the sequence-parallel chips hold different tokens of the
# same samples, so they share the weights' storage too) and over ``tensor`` on their wide side (Megatron-style);
# activations put samples over ``data`` x ``fsdp`` and tokens over ``sequence``. Names not listed (``layers``,
# ``head_dim``, patch kernels, ...) are replicated.
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", "sequence"),
    ("activation_embed", None),
    ("layers", None),
    ("embed", ("fsdp", "sequence")),
    ("text_embed", ("fsdp", "sequence")),
    ("conv_in", ("fsdp", "sequence")),
    ("mlp", "tensor"),
    ("qkv", "tensor"),
    ("qkv_mlp", "tensor"),
    ("attn", "tensor"),
    ("attn_mlp", "tensor"),
    ("modulation", "tensor"),
    ("kv", "tensor"),
    ("vocab", "tensor"),
    ("conv_out", "tensor"),
)
