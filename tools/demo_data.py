"""The demo model's training dataset: procedural clips -> VAE latents, reference latents and caption embeddings,
written with the project's dataset writer (TFDS ArrayRecord, ``hcjax.training.tfds_builder``).

    python tools/demo_data.py --vae runs/demo-vae/export --out data/demo [--clips 2000] [--seed 0] \\
        [--media data/demo-media --media-count 24]

Clip ``i`` is train scene ``i`` of ``hcjax.demo.world.scenes("train", clips, seed)`` (the held-out colour x shape x
direction combinations never appear). Records hold ``latents [5, 16, 16, 8]`` (posterior mean x scaling factor),
``ref_latents [1, 16, 16, 8]`` (the reference image in another pose on white, a posterior sample x scaling factor,
keys from ``--seed``), the demo text encoder's ``text_*`` of the caption and the caption; the empty prompt's
embedding is stored for text dropout. ``--media`` also writes the first ``--media-count`` clips as
``NAME.mp4`` / ``NAME.png`` (reference) / ``NAME.wav`` (the loudness track that sets the subject's size) /
``NAME.txt``, to look at.

Inputs are checked before any work; the dataset appears at ``--out`` only once complete.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

BATCH = 16


def _check(args) -> None:
    from hcjax.convert.model_dir import ModelDirError, read_model_info

    if Path(args.out).exists():
        raise SystemExit(f"error: --out {args.out} exists already; choose a new folder or delete it first")
    if args.media and Path(args.media).exists():
        raise SystemExit(f"error: --media {args.media} exists already; choose a new folder or delete it first")
    if args.clips < BATCH:
        raise SystemExit(f"error: --clips {args.clips}: give at least {BATCH}")
    try:
        info = read_model_info(args.vae)
    except ModelDirError as e:
        raise SystemExit(f"error: --vae: {' '.join(str(e).split())}") from None
    if info["preset"] != "demo" or "vae" not in info["parts"]:
        raise SystemExit(f"error: --vae {args.vae} holds {info['parts']} of preset {info['preset']!r}; give the demo "
                         "VAE's export (hcjax train --config experiments/configs/demo.py:vae)")


def write_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    samples = np.clip(np.rint(audio * 32767), -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate), w.writeframes(samples.tobytes())


def write_media(folder: Path, scenes, count: int) -> None:
    from hcjax.demo import world
    from hcjax.io import write_mp4, write_png

    folder.mkdir(parents=True)
    for i, scene in enumerate(scenes[:count]):
        name = f"clip{i:05d}"
        write_mp4(folder / f"{name}.mp4", world.render_video(scene), fps=world.FPS)
        write_png(folder / f"{name}.png", world.render_reference(scene))
        write_wav(folder / f"{name}.wav", world.render_audio(scene), world.SAMPLE_RATE)
        (folder / f"{name}.txt").write_text(world.caption(scene) + "\n")


def examples(scenes, preset, vae_params, seed: int, moments: list):
    """The records, in order; appends each batch's (sum, sum of squares, count) of the scaled latents to
    ``moments``."""
    import jax

    from hcjax.demo import pipeline, world
    from hcjax.demo.text import DemoTextEncoder

    encoder = DemoTextEncoder()
    key = jax.random.key(seed)
    start = time.perf_counter()
    for lo in range(0, len(scenes), BATCH):
        chunk = scenes[lo:lo + BATCH]
        videos = np.stack([world.render_video(s) for s in chunk])
        refs = np.stack([world.render_reference(s) for s in chunk])
        captions = [world.caption(s) for s in chunk]
        latents = pipeline.clip_latents(preset, vae_params, videos)
        ref_latents = pipeline.reference_latents(preset, vae_params, refs, jax.random.fold_in(key, lo))
        text = encoder.encode(captions)
        moments.append((float(latents.sum()), float(np.square(latents).sum()), latents.size))
        for j, caption in enumerate(captions):
            yield {"latents": latents[j], "ref_latents": ref_latents[j], "text_states": text.states[j],
                   "text_mask": text.mask[j], "text_pooled": text.pooled[j], "caption": caption}
        done = lo + len(chunk)
        print(f"\r{done}/{len(scenes)} clips ({time.perf_counter() - start:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vae", required=True, help="the demo VAE's model directory (runs/demo-vae/export)")
    p.add_argument("--out", required=True, help="new dataset folder")
    p.add_argument("--clips", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--media", help="also write the first clips as MP4 / PNG / WAV / TXT into this new folder")
    p.add_argument("--media-count", type=int, default=24)
    args = p.parse_args(argv)
    _check(args)

    from hcjax import configs
    from hcjax.convert.model_dir import load_model_dir
    from hcjax.demo import world
    from hcjax.demo.text import DemoTextEncoder
    from hcjax.training.custom_cond import record_extras
    from hcjax.training.data_spec import DataSpec
    from hcjax.training.tfds_builder import write_dataset

    preset = configs.get("demo")
    _, _, vae_params = load_model_dir(args.vae, parts=("vae",))
    scenes = world.scenes("train", args.clips, args.seed)
    if args.media:
        write_media(Path(args.media), scenes, args.media_count)
    null = DemoTextEncoder().encode([""])
    spec = DataSpec.for_model(preset.dit, null.states.shape[1], scaling_factor=preset.vae.scaling_factor,
                              extra=record_extras(preset))
    null_text = {"text_states": null.states[0], "text_mask": null.mask[0], "text_pooled": null.pooled[0]}
    moments = []
    write_dataset(args.out, examples(scenes, preset, vae_params, args.seed, moments), spec,
                  metadata={"source": "hcjax demo world", "clips": args.clips, "seed": args.seed, "vae": str(args.vae)},
                  null_text=null_text)
    total, squares, n = (sum(m[i] for m in moments) for i in range(3))
    std = (squares / n - (total / n) ** 2) ** 0.5
    print(f"wrote {args.clips} clips to {args.out}; scaled latents: mean {total / n:.3f}, std {std:.3f} (the preset's "
          f"scaling_factor {preset.vae.scaling_factor:g} would give unit std at {preset.vae.scaling_factor / std:.4g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
