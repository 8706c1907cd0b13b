"""The ``hcjax`` command.

    hcjax info    --model PRESET            parameter counts and structure of a preset (no memory used)
    hcjax sample  --model PRESET_OR_DIR ... a video from text (and a first-frame image for I2V models)
    hcjax convert --model PRESET ...        official / diffusers PyTorch checkpoints -> an Orbax model directory
    hcjax demo    [--out hcjax_demo.mp4]    the small bundled preset end to end, no arguments needed

Every input problem is reported in one line naming the fix, before any model is built or compiled (exit
status 2), and no output file is left behind.
"""

from __future__ import annotations

import argparse
import sys

from hcjax.cli.common import UsageError
from hcjax.cli import convert, demo, info, sample

__all__ = ["UsageError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hcjax", description="HunyuanVideo family in JAX/Flax")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (info, sample, convert, demo):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UsageError as e:
        print(f"hcjax {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
