"""Fine-tuning HunyuanCustom 13B on precomputed latents and conditions (``tools/precompute_dataset.py`` with the
custom model: reference images, audio or mask videos per clip).

    hcjax train --config experiments/configs/custom.py --config.model.init_from=models/hc \\
        --config.data.path=data/my_clips                       # image-driven identity (ref2v)
    hcjax train --config experiments/configs/custom.py:audio ...     # audio-driven (AudioNet)
    hcjax train --config experiments/configs/custom.py:editing ...   # video-driven editing (masked video)
    hcjax train --config experiments/configs/custom.py:audio-tiny    # the tiny model on synthetic data, on a CPU

Variants: ``image`` (the default), ``audio``, ``editing``, each with ``-tiny``; ``tiny`` is ``image-tiny``.
"""

from hcjax.training.defaults import default_config, fine_tune, tiny

PRESETS = {"image": "hunyuan-custom", "audio": "hunyuan-custom-audio", "editing": "hunyuan-custom-editing"}
VARIANTS = ("image", "audio", "editing", "tiny", "image-tiny", "audio-tiny", "editing-tiny")


def get_config(variant=None):
    if variant not in (None, *VARIANTS):
        raise ValueError(f"unknown variant {variant!r} of custom.py; use one of {', '.join(VARIANTS)}")
    task, tiny_variant = (variant or "image").removesuffix("-tiny"), (variant or "").endswith("tiny")
    task = "image" if task == "tiny" else task
    c = fine_tune(default_config(), f"custom-{task}", PRESETS[task])
    # text dropout to the empty prompt; the reference latents (and masked video) are always kept
    c.cond.audio_dropout = 0.1 if task == "audio" else 0.0   # zero audio, as the sampler's unconditional branch
    if tiny_variant:
        c = tiny(c, PRESETS[task].replace("hunyuan-custom", "tiny-custom"))
    return c
