"""Converts a Hugging Face Whisper checkpoint's encoder into an ``hcjax convert`` model directory
(``DIR/audio_encoder/``), for the audio-driven paths (HunyuanCustom / Avatar: whisper-tiny; HuMo: whisper-large-v3).

    python tools/convert_whisper.py --whisper ckpts/whisper-tiny --model-dir hcjax-custom

``--whisper`` is a ``WhisperModel`` / ``WhisperForConditionalGeneration`` folder (config, safetensors / .bin
weights, and ``preprocessor_config.json`` if present); only its encoder is kept. Local folders only.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from hcjax import convert  # noqa: E402
from hcjax.convert.audio_encoder_dir import save_audio_encoder  # noqa: E402
from hcjax.convert.whisper import whisper_encoder_from_torch  # noqa: E402
from hcjax.models.audio.whisper import WhisperEncoderConfig  # noqa: E402


def _feature_extractor(folder: str):
    """The folder's ``WhisperFeatureExtractor``, or None when it has no ``preprocessor_config.json``."""
    from transformers import WhisperFeatureExtractor

    if not os.path.exists(os.path.join(folder, "preprocessor_config.json")):
        return None
    return WhisperFeatureExtractor.from_pretrained(folder, local_files_only=True)


def convert_folder(whisper_dir: str, model_dir: str, dtype: str = "float32") -> None:
    """Converts the encoder of the Whisper folder ``whisper_dir`` into ``model_dir``."""
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(whisper_dir, local_files_only=True)
    cfg = WhisperEncoderConfig.from_transformers(hf, dtype=dtype, param_dtype=dtype)
    params = whisper_encoder_from_torch(convert.load_pretrained_weights(whisper_dir), cfg)
    save_audio_encoder(model_dir, cfg, params, _feature_extractor(whisper_dir))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--whisper", required=True, help="a WhisperModel / WhisperForConditionalGeneration folder")
    parser.add_argument("--model-dir", required=True, help="a directory written by `hcjax convert`")
    parser.add_argument("--dtype", default="float32", choices=["float16", "bfloat16", "float32"])
    args = parser.parse_args()
    try:
        convert_folder(args.whisper, args.model_dir, args.dtype)
    except (convert.CheckpointError, convert.ModelDirError) as e:
        raise SystemExit(str(e)) from None
    print(f"added the Whisper encoder to {args.model_dir}")


if __name__ == "__main__":
    main()
