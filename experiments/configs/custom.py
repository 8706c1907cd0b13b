"""Fine-tuning HunyuanCustom 13B on precomputed latents and conditions (``tools/precompute_dataset.py`` with the
custom model: reference images, audio or mask videos per clip).

    hcjax train --config experiments/configs/custom.py --config.model.init_from=models/hc \\
        --config.data.path=data/my_clips                       # image-driven identity (ref2v)
    hcjax train --config experiments/configs/custom.py:audio ...     # audio-driven (AudioNet)
    hcjax train --config experiments/configs/custom.py:editing ...   # video-driven editing (masked video)
    hcjax train --config experiments/configs/custom.py:audio-tiny    # the tiny model on synthetic data, on a CPU

Variants: ``image`` (the default), ``audio``, ``editing``, each with ``-tiny``; ``tiny`` is ``image-tiny``.
"""

from hcjax.training.defaults import default_config

PRESETS = {"image": "hunyuan-custom", "audio": "hunyuan-custom-audio", "editing": "hunyuan-custom-editing"}
VARIANTS = ("image", "audio", "editing", "tiny", "image-tiny", "audio-tiny", "editing-tiny")


def get_config(variant=None):
    if variant not in (None, *VARIANTS):
        raise ValueError(f"unknown variant {variant!r} of custom.py; use one of {', '.join(VARIANTS)}")
    task, tiny = (variant or "image").removesuffix("-tiny"), (variant or "").endswith("tiny")
    task = "image" if task == "tiny" else task
    c = default_config()
    c.name = f"custom-{task}"
    c.model.preset = PRESETS[task]
    c.data.source = "tfds"
    c.loss.shift = 1.0
    c.loss.text_dropout = 0.1          # the empty prompt; the reference latents (and masked video) are kept
    c.cond.audio_dropout = 0.1 if task == "audio" else 0.0   # zero audio, as the sampler's unconditional branch
    c.optim.learning_rate = 1e-5
    c.optim.warmup_steps = 100
    c.optim.weight_decay = 0.01
    c.train.global_batch = 8
    c.train.workdir = f"runs/{c.name}"
    if tiny:
        c.name += "-tiny"
        c.model.preset = PRESETS[task].replace("hunyuan-custom", "tiny-custom")
        c.model.dtype = "float32"
        c.model.remat = "none"
        c.data.source = "synthetic"
        c.optim.learning_rate = 3e-3
        c.optim.warmup_steps = 10
        c.optim.weight_decay = 0.0
        c.train.steps = 300
        c.train.global_batch = 4
        c.train.log_every = 10
        c.train.checkpoint_every = 50
        c.train.workdir = f"runs/{c.name}"
    return c
