"""HunyuanCustom's two text branches from a model directory's encoders: the prompt with the subject images
through LLaVA (``custom_text.encode_custom_text``) and the unconditional branch (white images, the default
subject name, the DiT mask cut to the text), each with CLIP-L's pooled vector of its prompt."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from hcjax.pipelines import custom_text as ct
from hcjax.pipelines.text_encoding import TextEncoders
from hcjax.pipelines.text_inputs import TextEmbeddings


@dataclasses.dataclass
class SubjectTextEncoders:
    """``TextEncoders`` plus LLaVA's image path (``convert.llava.LlavaImagePath`` with params)."""

    encoders: TextEncoders
    image_path: Any

    @property
    def features(self) -> int:
        """LLaVA features of one subject image (576 at full size)."""
        return self.image_path.vision_cfg.num_patches

    def _encode(self, prompt: str, images: Sequence[np.ndarray], names: Sequence[str]) -> ct.CustomText:
        e, p = self.encoders, self.image_path
        return ct.encode_custom_text(e.llm_cfg, e.llm_params, p.vision_cfg, p.vision_params, p.projector,
                                     p.projector_params, e.llm_tokenizer, [prompt], [list(images)], [list(names)],
                                     p.image_token_index, p.config_pad_token_id)

    def encode(self, prompt: str, images: Sequence[np.ndarray], names: Sequence[str]) -> TextEmbeddings:
        """``prompt`` with one RGB uint8 image per subject named ``names``: ``[1, 256 + M (N - 1), D]`` states,
        the reference's positional DiT mask."""
        text = self._encode(prompt, images, names)
        return TextEmbeddings(text.states, text.mask, self.encoders.pooled([prompt]))

    def encode_uncond(self, negative_prompt: str, num_images: int) -> TextEmbeddings:
        """The unconditional branch for ``num_images`` subjects: white images named ``person``, the DiT mask cut
        to the negative text (``custom_text.uncond_dit_mask``)."""
        text = self._encode(negative_prompt, [ct.white_image()] * num_images, [ct.UNCOND_NAME] * num_images)
        mask = ct.uncond_dit_mask(text.mask, self.features, num_images=num_images)
        return TextEmbeddings(text.states, mask, self.encoders.pooled([negative_prompt]))
