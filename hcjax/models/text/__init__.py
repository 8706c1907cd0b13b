"""Encoders of the conditioning: the Llama-3 text encoder, CLIP text / vision, the LLaVA projector, and the
MLLM prompt templates."""

from hcjax.models.text import templates
from hcjax.models.text.clip import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModel
from hcjax.models.text.llama import LlamaConfig, LlamaEncoder
from hcjax.models.text.llava import LlavaProjector, llava_image_features, select_image_features

__all__ = ["CLIPTextConfig", "CLIPTextModel", "CLIPVisionConfig", "CLIPVisionModel", "LlamaConfig", "LlamaEncoder",
           "LlavaProjector", "llava_image_features", "select_image_features", "templates"]
