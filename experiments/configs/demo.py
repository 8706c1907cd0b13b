"""The bundled demo model, trained from scratch on a CPU on the procedural world (``hcjax.demo``). In order:

    hcjax train --config experiments/configs/demo.py:vae_images # the 8-channel causal VAE on single frames
    hcjax train --config experiments/configs/demo.py:vae        # ... then on 5-frame clips (runs/demo-vae)
    python tools/demo_data.py --vae runs/demo-vae/export --out data/demo     # latents + text through the VAE
    hcjax train --config experiments/configs/demo.py:dit        # the DiT (runs/demo-dit); export = VAE + DiT
    python tools/eval_demo.py --model runs/demo-dit/export      # the held-out scores

``make demo-model`` runs all five and copies the export into the package (``hcjax/demo/weights``).
"""

from hcjax.training.defaults import default_config

VARIANTS = ("vae_images", "vae", "dit")

# reconstruction + KL on 64x64 crops (around the subject) of rendered clips: single frames first (colour and shape
# are learned from images many times faster), then 5-frame clips from there (the 4x time compression)
VAE_IMAGES = {"model.part": "vae", "data.source": "procedural", "data.crop_frames": 1, "train.steps": 1200,
              "train.global_batch": 16, "optim.warmup_steps": 50, "optim.learning_rate": 2e-3}
VAE = {"model.part": "vae", "data.source": "procedural", "model.init_from": "runs/demo-vae-images/export",
       "train.steps": 1600, "train.global_batch": 4, "optim.warmup_steps": 50, "optim.learning_rate": 1e-3}
# flow matching on the latents of tools/demo_data.py, the identity reference always given, text dropped 10%;
# timesteps shifted by 3 like the sampler's, and the EMA exported
DIT = {"model.init_from": "runs/demo-vae/export", "data.source": "tfds", "data.path": "data/demo",
       "loss.text_dropout": 0.1, "loss.shift": 3.0, "optim.ema_decay": 0.998, "train.steps": 6000,
       "train.global_batch": 8, "optim.learning_rate": 1e-3}


def get_config(variant=None):
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} of demo.py; use demo.py:vae_images, demo.py:vae or "
                         "demo.py:dit")
    c = default_config()
    c.name = f"demo-{variant.replace('_', '-')}"
    c.model.preset = "demo"
    c.model.dtype = "float32"
    c.model.remat = "none"
    c.train.workdir = f"runs/{c.name}"
    c.train.log_every = 25
    c.train.checkpoint_every = 250
    c.train.tensorboard = False
    c.optim.weight_decay = 0.0
    c.optim.warmup_steps = 25
    c.optim.schedule = "cosine"
    c.optim.end_ratio = 0.1
    c.update_from_flattened_dict({"vae_images": VAE_IMAGES, "vae": VAE, "dit": DIT}[variant])
    return c
