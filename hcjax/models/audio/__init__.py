"""Audio encoders of the audio-driven paths (HunyuanCustom and HunyuanVideo-Avatar: whisper-tiny; HuMo:
whisper-large-v3)."""

from hcjax.models.audio.whisper import (WHISPER_LARGE_V3, WHISPER_TINY, WhisperEncoder, WhisperEncoderConfig,
                                        WhisperEncoderLayer)
from hcjax.models.audio.whisper import abstract_params as whisper_abstract_params
from hcjax.models.audio.whisper import example_features as whisper_example_features
from hcjax.models.audio.whisper import init_params as whisper_init_params
from hcjax.models.audio.whisper import logical_axes as whisper_logical_axes

__all__ = ["WHISPER_LARGE_V3", "WHISPER_TINY", "WhisperEncoder", "WhisperEncoderConfig", "WhisperEncoderLayer",
           "whisper_abstract_params", "whisper_example_features", "whisper_init_params", "whisper_logical_axes"]
