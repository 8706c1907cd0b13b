"""``hcjax convert``: official / diffusers PyTorch checkpoints -> an Orbax model directory for ``sample``."""

from __future__ import annotations

import argparse
import os

from hcjax.cli.common import UsageError, preset


def run(args: argparse.Namespace) -> None:
    from hcjax import convert

    p = preset(args.model)
    if args.src is None and args.vae_src is None:
        raise UsageError("give --src (the DiT checkpoint) and/or --vae-src (the VAE checkpoint)")
    for flag, path in (("--src", args.src), ("--vae-src", args.vae_src)):
        if path is not None and not os.path.exists(path):
            raise UsageError(f"{flag} {path!r} does not exist")
    if os.path.exists(args.dst) and (not os.path.isdir(args.dst) or os.listdir(args.dst)):
        raise UsageError(f"--dst {args.dst!r} exists and is not empty; choose a new --dst or delete it")
    try:
        dit = vae = None
        if args.src is not None:
            dit = convert.dit_from_torch(convert.load_state_dict(args.src), p.dit, source=args.source)
        if args.vae_src is not None:
            vae = convert.vae_from_torch(convert.load_state_dict(args.vae_src), p.vae)
        convert.save_model_dir(args.dst, p.name, dit, vae, source=f"{args.source}: {args.src or ''} "
                               f"{args.vae_src or ''}".strip())
    except (convert.CheckpointError, convert.CheckpointMismatch, convert.ModelDirError, ValueError) as e:
        raise UsageError(" ".join(str(e).split())) from None
    parts = [name for name, tree in (("DiT", dit), ("VAE", vae)) if tree is not None]
    print(f"wrote {' and '.join(parts)} of {p.name} to {args.dst}")


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert PyTorch checkpoints to an Orbax model directory")
    p.add_argument("--model", required=True, help="preset the checkpoint belongs to")
    p.add_argument("--source", choices=["official", "diffusers"], default="official", help="DiT key layout")
    p.add_argument("--src", help="DiT checkpoint (.pt / .safetensors / sharded directory)")
    p.add_argument("--vae-src", help="VAE checkpoint")
    p.add_argument("--dst", required=True, help="new output directory")
    p.set_defaults(func=run)
