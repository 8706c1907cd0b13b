"""``hcjax demo``: the small bundled preset end to end (random weights until a trained demo model ships)."""

from __future__ import annotations

import argparse

from hcjax.cli import sample


def run(args: argparse.Namespace) -> None:
    print(f"hcjax demo: sampling preset {args.model!r} (random weights: expect coloured noise, not a scene)")
    sample.run(args)


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="sample the small bundled preset to an MP4, no arguments needed")
    p.add_argument("--model", default="tiny")
    p.add_argument("--out", default="hcjax_demo.mp4")
    sample.add_arguments(p)
    p.set_defaults(func=run, prompt="a red fox running through fresh snow, morning light")
