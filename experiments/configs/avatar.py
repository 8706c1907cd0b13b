"""Training HunyuanVideo-Avatar on precomputed latents and conditions (per clip: ``ref_latents``, ``audio_feats``,
``face_mask``, and ``emotion_latents`` for the emotion module; ``hcjax.training.avatar_cond``).

    hcjax train --config experiments/configs/avatar.py --config.model.init_from=models/avatar \\
        --config.data.path=data/my_clips                          # fine-tune the audio-driven model
    hcjax train --config experiments/configs/avatar.py:emotion --config.model.init_from=models/avatar ...
        # train the Audio Emotion Module alone on the converted official model (its params start fresh)
    hcjax train --config experiments/configs/avatar.py:audio-tiny     # the tiny model on synthetic data, on a CPU
    hcjax train --config experiments/configs/avatar.py:emotion-tiny   # then its emotion module, from that run

Variants: ``audio`` (the default), ``emotion``, ``audio-tiny``, ``emotion-tiny``. ``emotion-tiny`` starts from
``audio-tiny``'s export (``runs/avatar-audio-tiny/export``): a model trained from scratch with only the emotion
params trainable could not learn (the final layer starts at zero).
"""

from hcjax.training.defaults import default_config, fine_tune, tiny

PRESETS = {"audio": "hunyuan-avatar", "emotion": "hunyuan-avatar-emotion"}
EMOTION_PARAMS = ("emotion/*",)
VARIANTS = ("audio", "emotion", "audio-tiny", "emotion-tiny")


def get_config(variant=None):
    if variant not in (None, *VARIANTS):
        raise ValueError(f"unknown variant {variant!r} of avatar.py; use one of {', '.join(VARIANTS)}")
    task, tiny_variant = (variant or "audio").removesuffix("-tiny"), (variant or "").endswith("-tiny")
    c = fine_tune(default_config(), f"avatar-{task}", PRESETS[task])
    # text dropout to the empty prompt; zero audio as the sampler's unconditional branch (reference, mask kept)
    c.cond.audio_dropout = 0.1
    if task == "emotion":
        c.train.trainable = EMOTION_PARAMS
        c.optim.learning_rate = 1e-4           # a new module: a larger step than a fine-tune's
    if tiny_variant:
        c = tiny(c, PRESETS[task].replace("hunyuan-avatar", "tiny-avatar"))
        if task == "emotion":
            c.model.init_from = "runs/avatar-audio-tiny/export"
    return c
