"""What the subcommands share: the usage error and preset / model lookup."""

from __future__ import annotations

import os


class UsageError(Exception):
    """Bad command-line input; the message names the fix."""


def preset(name: str):
    from hcjax import configs

    try:
        return configs.get(name)
    except ValueError as e:
        raise UsageError(str(e)) from None


def is_small(p) -> bool:
    """Presets that random weights make sense for (smoke runs); full-size ones need a converted checkpoint."""
    return p.dit.hidden_size <= 1024


def resolve_model(model: str):
    """``(preset, model_dir or None)`` for ``--model``: a preset name or an ``hcjax convert`` directory."""
    from hcjax import configs, convert

    if model in configs.names():
        p = configs.get(model)
        if p.bundled_weights is not None:   # the demo model ships its weights inside the package
            bundled = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), p.bundled_weights)
            if convert.is_model_dir(bundled):
                return p, bundled
        return p, None
    if os.path.isdir(model):
        try:
            info = convert.read_model_info(model)
        except convert.ModelDirError as e:
            raise UsageError(str(e).replace("\n", " ")) from None
        return configs.get(info["preset"]), model
    raise UsageError(f"--model {model!r} is neither a preset ({', '.join(configs.names())}) nor a model "
                     "directory written by `hcjax convert`")


def output_path(path: str, suffix: str) -> str:
    """Checks that ``path`` ends in ``suffix`` and its folder exists."""
    if not path.lower().endswith(suffix):
        raise UsageError(f"--out {path!r} must end in {suffix}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"the folder of --out {path!r} does not exist; create {folder} first")
    return path


def check_audio_encoder(preset, model_dir: str | None, mechanism: str, adapter: str, family: str,
                        whisper: str = "whisper-tiny"):
    """The model directory has a Whisper (``whisper`` for ``family``) whose width the ``adapter`` (the DiT's
    ``mechanism``) takes, from its config, no params loaded; presets use their own ``audio_encoder``. Returns
    the encoder's config."""
    cfg = preset.audio_encoder
    if model_dir is not None:
        from hcjax.convert import ModelDirError
        from hcjax.convert.audio_encoder_dir import has_audio_encoder, read_audio_encoder_config

        if not has_audio_encoder(model_dir):
            raise UsageError(f"this model directory has no audio encoder: add Whisper ({whisper}) with "
                             "tools/convert_whisper.py")
        try:
            cfg = read_audio_encoder_config(model_dir)
        except ModelDirError as e:
            raise UsageError(" ".join(str(e).split())) from None
    channels = preset.mechanism(mechanism).channels
    if cfg.d_model != channels:
        raise UsageError(f"the audio encoder gives {cfg.d_model}-wide states but {adapter} takes {channels}: "
                         f"convert the Whisper the model was trained with ({whisper} for {family})")
    return cfg


def embeds_with_negative(path: str, preset):
    """``(text, negative)`` of a ``--text-embeds`` file for a model that guides with a negative text (Avatar, HuMo):
    the file must carry the negative's arrays too."""
    from hcjax.pipelines import text_inputs

    try:
        text, negative = text_inputs.load(path)
    except ValueError as e:
        raise UsageError(str(e).replace("\n", " ")) from None
    if negative is None:
        raise UsageError(f"{preset.name} guides with a negative text: --text-embeds needs negative_text_states, "
                         "negative_text_mask and negative_text_pooled too")
    return text, negative


def read_media(reader, path, flag: str):
    """``reader(path)`` (an image, audio or video reader), its failure one usage error naming ``flag``."""
    from hcjax.io import MediaError

    try:
        return reader(path)
    except (MediaError, ValueError) as e:
        raise UsageError(f"{flag}: {e}") from None


def one_video_text_problems(preset, text, negative, family: str) -> list[str]:
    """The problems of ``--text-embeds`` embeddings (``text`` and ``negative``; None when the prompt is encoded
    later) for a model that samples one video at a time with a negative text (Avatar, HuMo)."""
    if text is None:
        return []
    d = preset.dit
    found = text.problems(d.text_dim, d.pooled_dim) + negative.problems(d.text_dim, d.pooled_dim, "negative text")
    if text.batch != 1 or negative.batch != 1:
        found.append(f"{family} samples one video at a time: give one text (batch 1) in --text-embeds")
    return found
