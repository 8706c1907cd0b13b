"""Scores the demo model on held-out combinations of the procedural world.

    python tools/eval_demo.py                                   # the bundled model (hcjax/demo/weights)
    python tools/eval_demo.py --model runs/demo-dit/export --samples 48 --json scores.json --sheet eval.png
    python tools/eval_demo.py --model runs/demo-vae/export --samples 16 --sheet vae.png     # the VAE alone

Draws ``--samples`` scenes of the colour x shape x direction combinations kept out of training
(``hcjax.demo.world.held_out``; every combination equally often, backgrounds, poses and paths from ``--seed``),
samples each from its caption and reference image, and scores the videos with ``hcjax.demo.measure``: colour
accuracy, direction accuracy, shape accuracy, identity similarity to the reference (rotation- and scale-free
shape IoU) and temporal consistency. Four rows: the ground-truth renders of the same scenes (the ceiling of the
measurements), the same renders through the VAE (encoded and decoded: the ceiling of what the DiT can show), the
model with a freshly initialised DiT (untrained; same VAE), and the trained model. A VAE-only model directory gets
the first two rows (the sheet then shows the reconstructions).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

BATCH = 8
TARGETS = {"colour_accuracy": 0.9, "direction_accuracy": 0.8}


def sample_all(preset, dit_params, vae_params, scenes, request) -> np.ndarray:
    from hcjax.demo import pipeline, world

    out = []
    for lo in range(0, len(scenes), BATCH):
        chunk = scenes[lo:lo + BATCH]
        refs = np.stack([world.render_reference(s) for s in chunk])
        r = dataclasses.replace(request, seed=request.seed + lo)
        out.append(pipeline.generate(preset, dit_params, vae_params, [world.caption(s) for s in chunk], refs, r))
    return np.concatenate(out)


def table(rows: dict[str, dict[str, float]]) -> str:
    from hcjax.demo.measure import METRICS

    head = "| model | " + " | ".join(m.replace("_", " ") for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 1)]
    for name, scores in rows.items():
        cells = [f"{100 * scores[m]:.1f}%" if "accuracy" in m else f"{scores[m]:.3f}" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", help="the demo preset (its bundled weights) or a model directory")
    p.add_argument("--samples", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="sampling steps (default: the preset's)")
    p.add_argument("--cfg-scale", type=float, help="(default: the preset's)")
    p.add_argument("--no-untrained", action="store_true", help="skip the untrained row")
    p.add_argument("--json", help="write the scores here")
    p.add_argument("--sheet", help="write a PNG of the first samples (reference, then frames 0, 8, 16)")
    args = p.parse_args(argv)

    from hcjax.cli.common import UsageError, resolve_model

    try:
        preset, model_dir = resolve_model(args.model)
    except UsageError as e:
        raise SystemExit(f"error: {e}") from None
    if preset.text_encoder != "demo" or model_dir is None:
        raise SystemExit(f"error: --model {args.model}: give the demo preset or a demo model directory (the export of "
                         "hcjax train --config experiments/configs/demo.py:dit, or :vae for the VAE alone)")
    if args.samples < 1:
        raise SystemExit("error: --samples must be >= 1")

    from hcjax.convert.model_dir import load_model_dir, read_model_info
    from hcjax.demo import measure, pipeline, world
    from hcjax.models.params import init_params
    from hcjax.pipelines import SampleRequest

    parts = tuple(read_model_info(model_dir)["parts"])
    _, dit_params, vae_params = load_model_dir(model_dir, parts=parts)
    request = SampleRequest.defaults(preset, seed=args.seed, steps=args.steps, cfg_scale=args.cfg_scale)
    scenes = world.scenes("held_out", args.samples, 1000 + args.seed)
    truth = np.stack([world.render_video(s) for s in scenes])
    rows = {"ground truth (renders)": measure.score(truth, scenes)}
    recon = np.concatenate([pipeline.reconstruct(preset, vae_params, truth[lo:lo + BATCH])
                            for lo in range(0, len(scenes), BATCH)])
    rows["renders through the VAE"] = measure.score(recon, scenes)
    l1 = float(np.mean(np.abs(recon.astype(np.float32) - truth)) / 127.5)
    videos = recon
    if dit_params is not None:   # a VAE-only export (demo.py:vae) stops at the VAE's row
        if not args.no_untrained:
            start = time.perf_counter()
            videos = sample_all(preset, init_params(preset.dit, args.seed), vae_params, scenes, request)
            rows["untrained DiT"] = measure.score(videos, scenes)
            print(f"untrained: {time.perf_counter() - start:.0f} s", file=sys.stderr)
        start = time.perf_counter()
        videos = sample_all(preset, dit_params, vae_params, scenes, request)
        rows["trained"] = measure.score(videos, scenes)
        print(f"trained: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(f"{args.samples} held-out samples, {request.steps} steps, CFG {request.cfg_scale}, seed {args.seed}; "
          f"VAE reconstruction L1 {l1:.4f} (pixels in [-1, 1])\n")
    print(table(rows))
    if "trained" in rows:
        missed = [f"{k} {100 * rows['trained'][k]:.1f}% < {100 * v:.0f}%" for k, v in TARGETS.items()
                  if rows["trained"][k] < v]
        print("\ntargets met" if not missed else f"\ntargets missed: {'; '.join(missed)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"samples": args.samples, "seed": args.seed, "steps": request.steps, "vae_l1": l1,
                       "cfg_scale": request.cfg_scale, "rows": rows}, f, indent=2)
    if args.sheet:
        from hcjax.io import write_png

        rows_px = [np.concatenate([world.render_reference(s), *v[[0, 8, 16]]], 1) for s, v in zip(scenes[:8], videos)]
        write_png(args.sheet, np.concatenate(rows_px, 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
