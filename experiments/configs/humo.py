"""HuMo's progressive multimodal training on the HunyuanVideo backbone (preset ``humo``; ``training.humo_cond``).

    # stage 1, subject preservation: text + reference image, only the self-attention trains (minimal-invasive)
    hcjax train --config experiments/configs/humo.py:subject --config.model.init_from=models/t2v \\
        --config.data.path=data/humo_clips
    # stage 2, progressive: the audio-visual-sync share of the batches ramps 20 % -> 50 %, audio cross-attention
    # and the mask head join, the focus-by-predicting loss supervises the face
    hcjax train --config experiments/configs/humo.py:progressive \\
        --config.model.init_from=runs/humo-subject/export --config.data.path=data/humo_clips
    hcjax train --config experiments/configs/t2v.py:tiny                 # the tiny backbone, then both HuMo stages
    hcjax train --config experiments/configs/humo.py:subject-tiny        # of the tiny model on a CPU (synthetic
    hcjax train --config experiments/configs/humo.py:progressive-tiny    # data), each seeded by the one before

A ``humo`` run may start from a converted ``hunyuan-video-t2v`` directory: HuMo's mechanisms
are addable (freshly initialised; the audio output projections start at zero, so the backbone starts unchanged)
and the distilled backbone's guidance embedding is left out (HuMo samples with real CFG). Records carry
``ref_latents``, ``audio_feats`` (HuMo's windows per latent frame) and ``face_mask`` (``tools/precompute_dataset.py``).
"""

from hcjax.training.defaults import default_config, fine_tune, tiny
from hcjax.training.trainable import SELF_ATTENTION

VARIANTS = ("subject", "progressive", "subject-tiny", "progressive-tiny")
NEW_MODULES = ("audio/*", "mask_predictor/*")


def get_config(variant=None):
    if variant not in (None, *VARIANTS):
        raise ValueError(f"unknown variant {variant!r} of humo.py; use one of {', '.join(VARIANTS)}")
    stage, tiny_variant = (variant or "progressive").removesuffix("-tiny"), (variant or "").endswith("-tiny")
    c = fine_tune(default_config(), f"humo-{stage}", "humo")
    c.loss.timestep_sampling, c.loss.logit_mean, c.loss.logit_std = "logit_normal", 0.0, 1.0   # HuMo's hints
    c.cond.image_dropout = 0.1        # the zero reference frame: the image-free branches of the time-adaptive CFG
    c.tasks.mix = True
    if stage == "subject":
        c.train.trainable = SELF_ATTENTION
        c.tasks.stage1_steps = c.train.steps          # subject preservation only
    else:
        c.train.trainable = SELF_ATTENTION + NEW_MODULES
        c.cond.audio_dropout = 0.1
        c.tasks.stage1_steps, c.tasks.ramp_steps = 0, c.train.steps // 2
        c.tasks.start_fraction, c.tasks.end_fraction = 0.2, 0.5
        c.cond.mask_loss_weight, c.cond.mask_loss_end_weight = 0.1, 0.02
        c.cond.mask_loss_decay_steps = c.train.steps
    if tiny_variant:
        c = tiny(c, "tiny-humo")
        if stage == "subject":    # from the tiny T2V model of t2v.py:tiny (a fresh DiT's final layer is zero)
            c.tasks.stage1_steps = c.train.steps
            c.model.init_from = "runs/t2v-tiny/export"
        else:
            c.tasks.ramp_steps, c.cond.mask_loss_decay_steps = c.train.steps // 2, c.train.steps
            c.model.init_from = "runs/humo-subject-tiny/export"
    return c
