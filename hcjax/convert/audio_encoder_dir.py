"""The Whisper audio encoder inside a model directory: ``DIR/audio_encoder/`` holds ``config.json`` (the
``WhisperEncoderConfig``), Orbax params ``whisper/`` and, when given, the ``transformers``
``WhisperFeatureExtractor`` config in ``feature_extractor/``. Added to an existing model directory whole or not at
all."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from hcjax.convert.model_dir import ModelDirError, _checkpointer, _differences, _new_folder, _restore_checked
from hcjax.convert.model_dir import read_model_info
from hcjax.models.audio.whisper import WhisperEncoderConfig
from hcjax.models.params import abstract_params

FOLDER = "audio_encoder"


def _redo(model_dir: str | os.PathLike) -> str:
    return f"delete {Path(model_dir).absolute() / FOLDER} and run tools/convert_whisper.py again"


def has_audio_encoder(model_dir: str | os.PathLike) -> bool:
    return (Path(model_dir) / FOLDER / "config.json").is_file()


def read_audio_encoder_config(model_dir: str | os.PathLike) -> WhisperEncoderConfig:
    file = Path(model_dir) / FOLDER / "config.json"
    try:
        return WhisperEncoderConfig(**json.loads(file.read_text())["whisper"])
    except FileNotFoundError:
        raise ModelDirError(f"{Path(model_dir).absolute()}: holds no audio encoder; add it with "
                            "tools/convert_whisper.py") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelDirError(f"{file}: bad audio encoder config ({e}); {_redo(model_dir)}") from None


def save_audio_encoder(model_dir: str | os.PathLike, cfg: WhisperEncoderConfig, params: Any,
                       feature_extractor: Any = None) -> None:
    """Adds the Whisper encoder (and its ``WhisperFeatureExtractor``, if given) to the model directory
    ``model_dir``. Everything is checked before anything is written."""
    model_dir = Path(model_dir).absolute()
    read_model_info(model_dir)
    problems = [f"whisper {p}" for p in _differences(params, abstract_params(cfg))]
    mels = getattr(feature_extractor, "feature_size", cfg.num_mel_bins)
    if mels != cfg.num_mel_bins:
        problems.append(f"the feature extractor makes {mels} mel bins, the encoder takes {cfg.num_mel_bins}")
    if problems:
        raise ModelDirError(f"{model_dir}: audio encoder does not fit its config: " + "; ".join(problems))
    with _new_folder(model_dir / FOLDER, "delete it to replace the audio encoder") as tmp:
        with _checkpointer() as ckptr:
            ckptr.save(tmp / "whisper", params)
            ckptr.wait_until_finished()
        if feature_extractor is not None:
            feature_extractor.save_pretrained(tmp / "feature_extractor")
        (tmp / "config.json").write_text(json.dumps({"whisper": dataclasses.asdict(cfg)}, indent=2) + "\n")


def load_audio_encoder(model_dir: str | os.PathLike) -> tuple[WhisperEncoderConfig, Any]:
    """``(cfg, params)`` of the Whisper encoder stored in the model directory, checked against the config."""
    cfg = read_audio_encoder_config(model_dir)
    with _checkpointer() as ckptr:
        params = _restore_checked(ckptr, Path(model_dir).absolute() / FOLDER / "whisper", abstract_params(cfg),
                                  _redo(model_dir))
    return cfg, params
