"""``hcjax demo``: the bundled demo model end to end, no arguments needed.

It draws a subject of the procedural world the model was trained on, in a colour x shape x direction combination
it never saw in training, writes its reference image beside the output, and samples the caption with that
reference through ``hcjax sample`` (every ``sample`` flag works: ``--prompt``, ``--ref-image``, ``--seed``, ...).
"""

from __future__ import annotations

import argparse
import os

from hcjax.cli import sample
from hcjax.cli.common import output_path

DEMO_SCENE = ("red", "star", "left")   # a held-out combination (hcjax.demo.world.held_out)


def demo_scene():
    """The demo's default scene: ``DEMO_SCENE`` with the other choices drawn from seed 7."""
    import numpy as np

    from hcjax.demo import world

    return world.random_scene(np.random.default_rng(7), DEMO_SCENE)


def run(args: argparse.Namespace) -> None:
    from hcjax import configs

    if args.model in configs.names() and configs.get(args.model).text_encoder == "demo":
        scene = demo_scene()
        if args.prompt is None:
            from hcjax.demo import world

            args.prompt = world.caption(scene)
        if not args.ref_image:
            args.ref_image = [_write_reference(args.out, scene)]
        from hcjax.cli.common import resolve_model

        trained = resolve_model(args.model)[1] is not None
        print(f"hcjax demo: {args.prompt!r} with the subject of {args.ref_image[0]}"
              + ("" if trained else " (hcjax/demo/weights is missing: random weights; `make demo-model` trains them)"))
    else:
        args.prompt = args.prompt or "a red fox running through fresh snow, morning light"
        print(f"hcjax demo: sampling preset {args.model!r} with random weights (expect coloured noise)")
    sample.run(args)


def _write_reference(out: str, scene) -> str:
    from hcjax.demo import world
    from hcjax.io import write_png

    output_path(out, ".mp4")
    path = os.path.splitext(out)[0] + "_reference.png"
    write_png(path, world.render_reference(scene))
    return path


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="sample the bundled demo model to an MP4, no arguments needed")
    p.add_argument("--model", default="demo")
    p.add_argument("--out", default="hcjax_demo.mp4")
    sample.add_arguments(p)
    p.set_defaults(func=run)
