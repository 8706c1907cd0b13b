"""Fine-tuning HunyuanVideo T2V 13B on precomputed latents (``tools/precompute_dataset.py``).

    hcjax train --config experiments/configs/t2v.py --config.model.init_from=models/hv-t2v \\
        --config.data.path=data/my_clips
    hcjax train --config experiments/configs/t2v.py:tiny      # the tiny model on synthetic data, on a CPU
"""

from hcjax.training.defaults import default_config


def get_config(variant=None):
    c = default_config()
    c.name = "t2v"
    c.data.source = "tfds"
    c.loss.shift = 1.0
    c.loss.text_dropout = 0.1
    c.loss.guidance = 1.0
    c.optim.learning_rate = 1e-5
    c.optim.warmup_steps = 100
    c.optim.weight_decay = 0.01
    c.train.global_batch = 8
    c.train.workdir = "runs/t2v"
    if variant == "tiny":
        c.model.preset = "tiny"
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
        c.train.workdir = "runs/t2v-tiny"
    elif variant is not None:
        raise ValueError(f"unknown variant {variant!r} of t2v.py; use t2v.py or t2v.py:tiny")
    return c
