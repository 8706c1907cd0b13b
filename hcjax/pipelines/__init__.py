"""Inputs -> latents -> video, one module per task family."""

from hcjax.pipelines.hunyuan_video import SampleResult, denoise_fn, generate
from hcjax.pipelines.request import SampleRequest, initial_noise
from hcjax.pipelines.text_inputs import TextEmbeddings

__all__ = ["SampleRequest", "SampleResult", "TextEmbeddings", "denoise_fn", "generate", "initial_noise"]
