"""A folder of captioned videos -> the training dataset: VAE latents and text embeddings (TFDS ArrayRecord).

    python tools/precompute_dataset.py --model hcjax-t2v --src clips/ --out data/clips \\
        --buckets 544x960,960x544,624x832,832x624,720x720 --frames 129,65,33

``--src`` holds ``NAME.mp4`` (or .mov/.mkv/.webm/.avi) with its caption in ``NAME.txt``. Each clip goes to the
resolution bucket nearest its aspect ratio (scaled to cover it, centre-cropped) and keeps its first F frames,
F the longest of ``--frames`` it has. Latents are the VAE posterior mean times the VAE scaling factor; text is
the model directory's encoders' output padded or cut to ``--text-len`` tokens. The empty prompt's embedding is
stored too (``source.null_text()``, for text dropout). Read the result with ``hcjax.training.data.open_dataset(OUT)``.

``--model`` is a model directory written by ``hcjax convert`` with its VAE and text encoders
(tools/convert_text_encoders.py), or, for smoke runs and tests, a small preset name (e.g. ``tiny``): random
VAE weights and deterministic stand-in text embeddings (``hcjax.pipelines.text_inputs.placeholder``).

Every input is checked before any model is loaded (exit status 2, one message naming the fix); the dataset is
built in a hidden folder beside ``--out`` and renamed into place only once complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from hcjax.cli.common import UsageError, is_small, resolve_model  # noqa: E402

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi")


@dataclasses.dataclass
class Clip:
    name: str
    path: Path
    caption: str
    size: tuple[int, int]      # bucket (height, width) in pixels
    frames: int                # frames kept (the first ones)


@dataclasses.dataclass
class Plan:
    preset: object
    model_dir: str | None
    clips: list[Clip]
    out: Path
    text_len: int
    text_dtype: str
    tiling: bool
    metadata: dict


def parse_sizes(text: str, multiple: int) -> list[tuple[int, int]]:
    """``"544x960,960x544"`` -> ``[(544, 960), (960, 544)]`` (height x width, multiples of ``multiple``)."""
    try:
        sizes = [tuple(int(n) for n in s.lower().split("x")) for s in text.split(",")]
    except ValueError:
        sizes = [()]
    if not sizes or any(len(s) != 2 or min(s) < 1 or s[0] % multiple or s[1] % multiple for s in sizes):
        raise UsageError(f"--buckets {text!r}: give HEIGHTxWIDTH pairs, comma-separated, each a positive multiple "
                         f"of {multiple} (e.g. 544x960,960x544)")
    return sizes


def parse_frames(text: str, ratio: int) -> list[int]:
    try:
        frames = sorted({int(n) for n in text.split(",")}, reverse=True)
    except ValueError:
        frames = [0]
    if any(f < 1 or (f - 1) % ratio for f in frames):
        raise UsageError(f"--frames {text!r}: give frame counts {ratio}k+1, comma-separated (e.g. 129,65,33)")
    return frames


def probe(path: Path) -> tuple[int, int, int]:
    """``(frames, height, width)`` of a video, without decoding it into memory."""
    import warnings

    import imageio_ffmpeg

    try:
        with warnings.catch_warnings():  # ffmpeg runs as a subprocess; JAX's fork warning does not apply
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            gen = imageio_ffmpeg.read_frames(str(path))
            width, height = next(gen)["size"]
            gen.close()
            frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except Exception as e:  # noqa: BLE001 - ffmpeg fails in many ways on bad files
        raise UsageError(f"{path.name}: unreadable video ({str(e).splitlines()[0]}); re-encode it to H.264 MP4 "
                         "with ffmpeg or remove it") from None
    return frames, height, width


def nearest_bucket(height: int, width: int, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The size whose aspect ratio is nearest (in log ratio) to ``height / width``; ties go to the first listed."""
    aspect = math.log(height / width)
    return min(sizes, key=lambda s: round(abs(math.log(s[0] / s[1]) - aspect), 9))


def find_clips(src: Path, sizes, frames) -> list[Clip]:
    """Every video of ``src`` with its caption, bucket and frame count; all problems in one ``UsageError``."""
    if not src.is_dir():
        raise UsageError(f"--src {src} is not a folder; give the folder of NAME.mp4 + NAME.txt pairs")
    videos = sorted(p for p in src.iterdir() if p.suffix.lower() in VIDEO_EXTS and p.is_file())
    if not videos:
        raise UsageError(f"--src {src} holds no videos ({', '.join(VIDEO_EXTS)}); add NAME.mp4 + NAME.txt pairs")
    clips, problems = [], []
    for path in videos:
        text = path.with_suffix(".txt")
        if not text.is_file():
            problems.append(f"{path.name} has no caption: write it to {text.name}")
            continue
        caption = text.read_text(encoding="utf-8").strip()
        if not caption:
            problems.append(f"{text.name} is empty: write the caption of {path.name} into it")
            continue
        try:
            count, height, width = probe(path)
        except UsageError as e:
            problems.append(str(e))
            continue
        fits = [f for f in frames if f <= count]
        if not fits:
            problems.append(f"{path.name} has {count} frames, fewer than the shortest of --frames ({frames[-1]}): "
                            "remove it or add a shorter frame count")
            continue
        clips.append(Clip(path.stem, path, caption, nearest_bucket(height, width, sizes), fits[0]))
    if problems:
        raise UsageError(f"{len(problems)} input problem(s), nothing written: " + "; ".join(problems))
    return clips


def prepare(args: argparse.Namespace) -> Plan:
    """Every check, no heavy work."""
    from hcjax.convert import ModelDirError, read_model_info
    from hcjax.convert.text_encoder_dir import has_text_encoders

    preset, model_dir = resolve_model(args.model)
    if model_dir is None and not is_small(preset):
        raise UsageError(f"preset {preset.name!r} is full size: give a model directory from `hcjax convert` (random "
                         "weights are only for small presets such as tiny)")
    if model_dir is not None:
        try:
            parts = read_model_info(model_dir)["parts"]
        except ModelDirError as e:
            raise UsageError(str(e).replace("\n", " ")) from None
        if "vae" not in parts:
            raise UsageError(f"model directory {model_dir} has no VAE: convert again with --vae-src")
        if not has_text_encoders(model_dir):
            raise UsageError(f"model directory {model_dir} has no text encoders: add them with "
                             "tools/convert_text_encoders.py")
    out = Path(args.out).absolute()
    if out.exists():
        raise UsageError(f"--out {out} exists already; choose a new folder or delete it first")
    if not out.parent.is_dir():
        raise UsageError(f"the folder of --out {out} does not exist; create {out.parent} first")
    if args.text_len < 1:
        raise UsageError(f"--text-len must be positive, got {args.text_len}")
    multiple = preset.vae.spatial_ratio * preset.dit.patch_size[1]
    sizes = parse_sizes(args.buckets, multiple)
    frames = parse_frames(args.frames, preset.vae.temporal_ratio)
    clips = find_clips(Path(args.src), sizes, frames)
    meta = {"source": {"model": os.path.abspath(args.model) if model_dir else args.model,
                       "videos": os.path.abspath(args.src), "text": "encoders" if model_dir else "placeholder"},
            "pixel_buckets": [list(s) for s in sizes], "frame_counts": frames}
    return Plan(preset, model_dir, clips, out, args.text_len, args.text_dtype, not args.no_tiling, meta)


def fit_text(states: np.ndarray, mask: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``[L', D]`` states and ``[L']`` mask zero-padded or cut to ``length`` tokens."""
    n = min(length, states.shape[0])
    s, m = np.zeros((length, states.shape[1]), np.float32), np.zeros(length, np.int32)
    s[:n], m[:n] = states[:n], mask[:n]
    return s, m


@functools.cache
def vae_encoder(cfg):
    """``encode(params, video, tiling)``: the jitted VAE posterior mean, one per config (compiled once per shape)."""
    import jax

    from hcjax.models import CausalVAE

    vae = CausalVAE(cfg)
    return jax.jit(lambda params, video, tiling: vae.apply({"params": params}, video, tiling,
                                                           method=CausalVAE.encode), static_argnums=2)


def load_models(plan: Plan):
    """``(vae_params, text encoders or None)``: the model directory's, or random VAE weights for a preset."""
    import jax

    from hcjax.models import random_params

    if plan.model_dir is None:
        vae_params, encoders = random_params(plan.preset.vae, 0), None
    else:
        from hcjax.convert import load_model_dir
        from hcjax.convert.text_encoder_dir import load_text_encoders

        vae_params, encoders = load_model_dir(plan.model_dir, ("vae",))[2], load_text_encoders(plan.model_dir)
    return jax.device_put(vae_params, jax.local_devices()[0]), encoders   # committed: one compile per shape


def encode_text(plan: Plan, encoders, caption: str, frames: int) -> tuple[dict, int]:
    """``({text_states, text_mask, text_pooled}, tokens cut)`` of one caption at ``--text-len``."""
    from hcjax.pipelines import text_inputs

    d = plan.preset.dit
    if encoders is None:
        text = text_inputs.placeholder(caption, d.text_dim, d.pooled_dim, length=plan.text_len)
    else:
        text = encoders.encode([caption], frames)
    states, mask = fit_text(np.asarray(text.states)[0], np.asarray(text.mask)[0], plan.text_len)
    cut = int(np.asarray(text.mask)[0].sum()) - int(mask.sum())
    return {"text_states": states, "text_mask": mask, "text_pooled": np.asarray(text.pooled, np.float32)[0]}, cut


def examples(plan: Plan, vae_params, encoders) -> Iterator[dict]:
    """One record per clip, encoded as it is needed."""
    from hcjax.configs import VAETiling
    from hcjax.io import image_to_unit_range, read_video, resize_center_crop

    vae = plan.preset.vae
    encode = vae_encoder(vae)
    for i, clip in enumerate(plan.clips):
        (h, w), f = clip.size, clip.frames
        frames = read_video(clip.path)[:f]
        if len(frames) < f:
            raise UsageError(f"{clip.path.name}: decoded {len(frames)} frames, fewer than the {f} probed; "
                             "re-encode it with ffmpeg")
        video = image_to_unit_range(np.stack([resize_center_crop(x, h, w) for x in frames]))[None]
        tiling = VAETiling() if plan.tiling and (h > 256 or w > 256 or f > 64) else None
        latents = np.asarray(encode(vae_params, video, tiling), np.float32)[0] * np.float32(vae.scaling_factor)
        text, cut = encode_text(plan, encoders, clip.caption, f)
        print(f"[{i + 1}/{len(plan.clips)}] {clip.path.name}: {f} frames at {h}x{w} -> latents "
              f"{list(latents.shape)}" + (f" (caption cut by {cut} tokens)" if cut else ""), flush=True)
        yield {"latents": latents.astype(np.float32), **text, "caption": clip.caption}


def run(plan: Plan) -> None:
    from hcjax.training.data_spec import DataSpec
    from hcjax.training.tfds_builder import write_dataset

    p = plan.preset
    spec = DataSpec(p.vae.latent_channels, plan.text_len, p.dit.text_dim, p.dit.pooled_dim,
                    float(p.vae.scaling_factor), plan.text_dtype)
    vae_params, encoders = load_models(plan)
    null_text, _ = encode_text(plan, encoders, "", max(c.frames for c in plan.clips))   # for text dropout
    write_dataset(plan.out, examples(plan, vae_params, encoders), spec, plan.metadata, null_text)
    print(f"wrote {len(plan.clips)} clips to {plan.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory (hcjax convert) or a small preset name")
    parser.add_argument("--src", required=True, help="folder of NAME.mp4 + NAME.txt (caption)")
    parser.add_argument("--out", required=True, help="new folder for the dataset")
    parser.add_argument("--buckets", default="544x960,960x544,624x832,832x624,720x720",
                        help="resolution buckets HEIGHTxWIDTH in pixels, comma-separated")
    parser.add_argument("--frames", default="129,65,33", help="frame counts 4k+1; each clip keeps the longest it has")
    parser.add_argument("--text-len", type=int, default=256, help="text tokens per clip (padded or cut)")
    parser.add_argument("--text-dtype", choices=["float16", "float32"], default="float16",
                        help="how text states are stored (read back as float32)")
    parser.add_argument("--no-tiling", action="store_true", help="encode large clips whole (more memory)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from hcjax.convert import ModelDirError
    from hcjax.io import MediaError

    args = build_parser().parse_args(argv)
    try:
        plan = prepare(args)
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
        run(plan)
    except (UsageError, MediaError, ModelDirError, FileExistsError) as e:
        print(f"precompute_dataset: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
