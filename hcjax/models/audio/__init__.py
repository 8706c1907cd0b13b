"""Audio encoders of the audio-driven paths (HunyuanCustom and HunyuanVideo-Avatar: whisper-tiny; HuMo:
whisper-large-v3)."""

from hcjax.models.audio.whisper import (WHISPER_LARGE_V3, WHISPER_TINY, WhisperEncoder, WhisperEncoderConfig,
                                        WhisperEncoderLayer)
from hcjax.models.audio.whisper import example_features as whisper_example_features

__all__ = ["WHISPER_LARGE_V3", "WHISPER_TINY", "WhisperEncoder", "WhisperEncoderConfig", "WhisperEncoderLayer",
           "whisper_example_features"]
