"""Fine-tuning HunyuanVideo T2V 13B on precomputed latents (``tools/precompute_dataset.py``).

    hcjax train --config experiments/configs/t2v.py --config.model.init_from=models/hv-t2v \\
        --config.data.path=data/my_clips
    hcjax train --config experiments/configs/t2v.py:tiny      # the tiny model on synthetic data, on a CPU
"""

from hcjax.training.defaults import default_config, fine_tune, tiny


def get_config(variant=None):
    c = fine_tune(default_config(), "t2v", "hunyuan-video-t2v")
    c.loss.guidance = 1.0
    if variant == "tiny":
        c = tiny(c, "tiny")
    elif variant is not None:
        raise ValueError(f"unknown variant {variant!r} of t2v.py; use t2v.py or t2v.py:tiny")
    return c
