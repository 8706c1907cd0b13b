"""The ``hcjax`` command.

    hcjax info    --model PRESET            parameter counts and structure of a preset (no memory used)
    hcjax sample  --model PRESET_OR_DIR ... a video from text (I2V: a first frame; Custom: subject images;
                                          Avatar: a character image and its audio; HuMo: reference images
                                          and audio)
    hcjax convert --model PRESET ...        official / diffusers PyTorch checkpoints -> an Orbax model directory
    hcjax demo    [--out hcjax_demo.mp4]    the small bundled preset end to end, no arguments needed
    hcjax train   --config FILE.py[:VARIANT] [--config.key=value ...]   flow-matching training, resumable
    hcjax aot     --model PRESET --task train|sample --topology v5p-64 ...   compile for a TPU topology here

Every input problem is reported in one line naming the fix, before any model is built or compiled (exit
status 2), and no output file is left behind.
"""

from __future__ import annotations

import argparse
import sys

from hcjax.cli.common import UsageError
from hcjax.cli import aot, convert, demo, info, sample, train

__all__ = ["UsageError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hcjax", description="HunyuanVideo family in JAX/Flax")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (info, sample, convert, demo, train, aot):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        bad = [a for a in extra if not a.startswith("--config.")]
        if bad:
            parser.error(f"unrecognized arguments: {' '.join(bad)} (overrides are --config.KEY=VALUE)")
        args.overrides = [a[2:] for a in extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "aot":
        args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args.func(args)
    except UsageError as e:
        print(f"hcjax {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
