"""Fine-tuning HunyuanVideo-I2V 13B (token replacement) on precomputed latents with their first frames
(``tools/precompute_dataset.py --model`` an I2V model directory, which adds ``first_latents``).

    hcjax train --config experiments/configs/i2v.py --config.model.init_from=models/hv-i2v \\
        --config.data.path=data/my_clips
    hcjax train --config experiments/configs/i2v.py:tiny      # the tiny I2V model on synthetic data, on a CPU

The first latent frame stays clean in the model input and out of the loss (``hcjax.training.i2v_cond``).
"""

from hcjax.training.defaults import default_config, fine_tune, tiny


def get_config(variant=None):
    c = fine_tune(default_config(), "i2v", "hunyuan-video-i2v")
    c.loss.guidance = 1.0
    if variant == "tiny":
        c = tiny(c, "tiny-i2v")
    elif variant is not None:
        raise ValueError(f"unknown variant {variant!r} of i2v.py; use i2v.py or i2v.py:tiny")
    return c
