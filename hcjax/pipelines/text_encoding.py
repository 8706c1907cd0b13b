"""Prompts -> ``TextEmbeddings`` with the Flax encoders: the Llama-3 MLLM (templated, ``hidden_states[-3]``,
template cropped) and CLIP-L (pooled), as the reference's ``encode_prompt`` (section 4)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from hcjax.models.text import templates
from hcjax.models.text.clip import CLIPTextConfig, CLIPTextModel
from hcjax.models.text.llama import LlamaConfig, LlamaEncoder
from hcjax.pipelines.text_inputs import TextEmbeddings

SKIP_LAYERS = 2   # hidden_state_skip_layer: the output of layer N - 2


@dataclasses.dataclass
class TextEncoders:
    """The two text encoders of HunyuanVideo with their params and (``transformers``) tokenizers."""

    llm_cfg: LlamaConfig
    llm_params: Any
    clip_cfg: CLIPTextConfig
    clip_params: Any
    llm_tokenizer: Any
    clip_tokenizer: Any

    def __post_init__(self):
        self._llm = jax.jit(functools.partial(LlamaEncoder(self.llm_cfg).apply,
                                              output_layer=self.llm_cfg.num_layers - SKIP_LAYERS))
        self._clip = jax.jit(CLIPTextModel(self.clip_cfg).apply)

    def encode(self, prompts: list[str], frames: int) -> TextEmbeddings:
        """``TextEmbeddings`` of ``prompts`` (float32): ``[B, 256, D_llm]`` states and mask, ``[B, D_clip]``
        pooled. The image template is used for a 1-frame sample."""
        template = templates.for_frames(frames)
        ids, mask = templates.tokenize(self.llm_tokenizer, prompts, template)
        states, mask = templates.crop(self._llm({"params": self.llm_params}, ids, mask), mask, template)
        return TextEmbeddings(np.asarray(states, np.float32), np.asarray(mask, np.int32), self.pooled(prompts))

    def pooled(self, prompts: list[str]) -> np.ndarray:
        """CLIP-L's pooled vectors ``[B, D_clip]`` float32 (no template)."""
        clip_ids, clip_mask = templates.tokenize_clip(self.clip_tokenizer, prompts)
        _, pooled = self._clip({"params": self.clip_params}, clip_ids, clip_mask)
        return np.asarray(pooled, np.float32)
