"""``hcjax train --config experiments/configs/NAME.py[:VARIANT] [--config.key=value ...]``."""

from __future__ import annotations

import argparse

from hcjax.cli.common import UsageError


def run(args: argparse.Namespace) -> None:
    from hcjax.training import loop, run_config

    try:
        config = run_config.apply_overrides(run_config.load(args.config), args.overrides)
        trainer = loop.trainer(config)
        built = trainer.build(config)
    except ValueError as e:  # config, mesh, data and checkpoint problems: all found before training
        raise UsageError(str(e)) from None
    model = (f"the VAE {built.vae.block_channels}" if config.model.part == "vae" else
             f"{built.dit.depth_double}+{built.dit.depth_single} blocks of width {built.dit.hidden_size}")
    print(f"hcjax train: {config.name}: {model}, mesh {dict(built.mesh.shape)}, {len(built.source)} clips, "
          f"{config.train.steps} steps of batch {config.train.global_batch}; workdir {built.workdir}")
    try:
        records = trainer.run_training(built)
    except ValueError as e:  # e.g. a checkpoint of another model, found when resuming
        raise UsageError(str(e)) from None
    if records:
        print(f"hcjax train: step {records[-1]['step']}: loss {records[-1]['loss']:.4f}")


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="flow-matching training or fine-tuning from an experiment config")
    p.add_argument("--config", required=True, help="experiments/configs/NAME.py, optionally :VARIANT (e.g. :tiny)")
    p.set_defaults(func=run, overrides=[])
