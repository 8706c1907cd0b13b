"""A folder of captioned videos -> the training dataset: VAE latents and text embeddings (TFDS ArrayRecord).

    python tools/precompute_dataset.py --model hcjax-t2v --src clips/ --out data/clips \\
        --buckets 544x960,960x544,624x832,832x624,720x720 --frames 129,65,33

``--src`` holds ``NAME.mp4`` (or .mov/.mkv/.webm/.avi) with its caption in ``NAME.txt``. Each clip goes to the
resolution bucket nearest its aspect ratio (scaled to cover it, centre-cropped) and keeps its first F frames,
F the longest of ``--frames`` it has. Latents are the VAE posterior mean times the VAE scaling factor; text is
the model directory's encoders' output padded or cut to ``--text-len`` tokens (default 256). The empty prompt's
embedding is stored too (``source.null_text()``, for text dropout). Read the result with ``hcjax.training.data.open_dataset(OUT)``.

``--model`` is a model directory written by ``hcjax convert`` with its VAE and text encoders
(tools/convert_text_encoders.py), or, for smoke runs and tests, a small preset name (e.g. ``tiny``): random
VAE weights and deterministic stand-in text embeddings (``hcjax.pipelines.text_inputs.placeholder``).

HunyuanCustom models (``hunyuan-custom``, ``-audio``, ``-editing`` and their tiny presets) also get the record
keys their mechanisms read (``hcjax.training.custom_cond``), each from one file per clip named like the video:

* ``ref_latents [1, h, w, C]``: ``--ref-images DIR`` holds ``NAME.png`` (or .jpg, .jpeg, .webp, .bmp), the
  subject image, padded (aspect kept, white) to the clip's size; without ``--ref-images`` the clip's first frame
  is the reference (the paper takes identity images from the training clip).
* ``audio_feats [F, 10, 5, c]``: ``--audio DIR`` holds ``NAME.wav`` (or .mp3, .flac, .m4a, .ogg, .aac), the
  clip's sound from its first frame on; video frame ``f`` is taken at 25 fps (samples ``640 f`` on at 16 kHz),
  so give 25 fps clips. Whisper: the model directory's (tools/convert_whisper.py) or random weights for a preset.
* ``bg_latents [T, h, w, 2C]``: ``--masks DIR`` holds ``NAME.mp4`` (or another video type), the mask video
  (white = the region to edit) with at least the clip's frames, resized and cropped like the clip.

Their text is HunyuanCustom's (``pipelines.custom_text``): the caption in the video template with the identity
suffix for the subject ``object``, through LLaVA with the reference image (the file or the first frame) in place
of ``<image>``, with the reference's positional DiT mask; ``--text-len`` defaults to 256 plus the tower's features
less one (831 at full size) and may not be shorter. The model directory then needs LLaVA's image path
(tools/convert_text_encoders.py from the LLaVA folder). The stored null text is the sampler's unconditional
branch for an empty negative prompt: a white image, the subject ``person``, the mask cut to the text.

HunyuanVideo-Avatar models (``tiny-avatar``, ``hunyuan-avatar`` and their ``-emotion`` variants) get the keys of
``hcjax.training.avatar_cond`` (dispatched by ``hcjax.training.cond_inputs``), from files named like the clip:

* ``ref_latents [1, h, w, C]``: ``--ref-images DIR`` as above, but resized to cover the clip's size and
  centre-cropped (``hcjax.io.resize_center_crop``), or the clip's first frame; one latent frame (training repeats it
  over the clip's latent frames).
* ``audio_feats [F, 10, 5, c]``: ``--audio DIR`` as above, with Avatar's Whisper features (``task="avatar"``).
* ``face_mask [1, h, w]``: ``--face-masks DIR`` holds ``NAME.png`` (or another image type), white = the face,
  resized and cropped like the clip, made binary (``pipelines.avatar_media.mask_image``) and shrunk bilinearly to
  the latent size (``latent_face_mask``, values in [0, 1]); without ``--face-masks`` every mask is all ones, the
  official fallback when no face is found.
* ``emotion_latents [1, h, w, C]`` (``-emotion`` models only, which require it): ``--emotion-images DIR`` holds
  ``NAME.png``, the emotion image, resized and cropped like the reference.

Avatar datasets store the plain caption embedding (the T2V text encoders, ``--text-len`` default 256); the
official Avatar text is LLaVA with the reference image and the "Authentic, ..." prompt prefix
(``pipelines.avatar_text``), which this tool does not compute.

HuMo models (``humo``, ``tiny-humo``) get the keys of ``hcjax.training.humo_cond``, from files named like the clip,
preprocessed as the HuMo sampler does (``pipelines.humo``):

* ``ref_latents [1, h, w, C]``: ``--ref-images DIR`` as above, fitted inside the clip's size on a white canvas
  (``pipelines.humo_media.reference_pixels``), or the clip's first frame; VAE-encoded as a one-frame video, the
  posterior *mean* times the scaling factor (``pipelines.humo.encode_conditions``).
* ``audio_feats [T, 8, 5, c]``: ``--audio DIR`` as above, HuMo's Whisper windows of the ``T = 1 + (F - 1) / 4``
  latent frames (``audio_condition(task="humo")``, no reference slots). The Whisper (the model directory's,
  whisper-large-v3; or the preset's random one) must have 4k layers (4k + 1 hidden states, HuMo's grouping), and
  each audio file must cover its clip's frames at 25 fps; both are checked before any work.
* ``face_mask [1, h, w]``: ``--face-masks DIR`` exactly as for Avatar; without it every mask is all ones, which
  teaches the mask predictor nothing (give masks, or train with ``cond.mask_loss_weight`` 0).

HuMo datasets store the plain caption embedding, as Avatar's.

Image-to-video models (``hunyuan-video-i2v``, ``tiny-i2v``: token replacement) get ``first_latents [1, h, w, C]``
(``hcjax.training.i2v_cond``): the clip's first kept frame encoded alone as a one-frame video, a posterior sample
times the scaling factor, as the official I2V training re-encodes it. They too store the plain caption embedding;
HunyuanVideo-I2V's own text is LLaVA with the image (``pipelines.i2v_text``), which this tool does not compute.

Custom and Avatar reference, masked-video, mask and emotion latents are VAE posterior samples (``--seed``) times the
scaling factor, as the reference encodes them; the clip's own latents stay the posterior mean.

Every input is checked before any model is loaded (exit status 2, one message naming the fix); the dataset is
built in a hidden folder beside ``--out`` and renamed into place only once complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from hcjax.cli.common import UsageError, is_small, resolve_model  # noqa: E402

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
AUDIO_EXTS = (".wav", ".mp3", ".flac", ".m4a", ".ogg", ".aac")


@dataclasses.dataclass
class Clip:
    name: str
    path: Path
    caption: str
    size: tuple[int, int]      # bucket (height, width) in pixels
    frames: int                # frames kept (the first ones)
    ref: Path | None = None    # the subject image (None: the first frame), for models that read ref_latents
    audio: Path | None = None
    mask: Path | None = None
    face: Path | None = None       # Avatar / HuMo face mask image (None: all ones)
    emotion: Path | None = None    # Avatar emotion image


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
    extra: tuple = ()          # DataSpec.extra: the condition keys the model reads
    seed: int = 0              # of the VAE posterior samples of the conditions
    subject_text: bool = False  # HunyuanCustom LLaVA text with the reference image (model directories only)


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


# Clip field -> the record key needing it, its flag, what the file is, the file types.
CONDITION_FILES = {"ref": ("ref_latents", "--ref-images", "reference image", IMAGE_EXTS),
                   "audio": ("audio_feats", "--audio", "audio file", AUDIO_EXTS),
                   "mask": ("bg_latents", "--masks", "mask video", VIDEO_EXTS),
                   "face": ("face_mask", "--face-masks", "face mask image", IMAGE_EXTS),
                   "emotion": ("emotion_latents", "--emotion-images", "emotion image", IMAGE_EXTS)}
OPTIONAL_FILES = ("ref", "face")   # references default to the first frame, face masks to all ones


def _condition_folder(field: str, args: argparse.Namespace, keys: tuple[str, ...], model: str) -> Path | None:
    key, flag, what, exts = CONDITION_FILES[field]
    value = getattr(args, flag[2:].replace("-", "_"))
    if value is None:
        if key in keys and field not in OPTIONAL_FILES:
            raise UsageError(f"the model {model} reads {what}s: give {flag} DIR with one {what} per clip, named "
                             f"like the clip ({', '.join(exts)})")
        return None
    if key not in keys:
        raise UsageError(f"{flag}: the model {model} reads no {what}s; leave {flag} out or give a model that does")
    if not Path(value).is_dir():
        raise UsageError(f"{flag} {value} is not a folder; give the folder of one {what} per clip, named like it")
    return Path(value)


def find_conditions(clips: list[Clip], args: argparse.Namespace, model: str, keys: tuple[str, ...]) -> None:
    """Sets each clip's reference, audio, mask video, face mask and emotion image files as the condition ``keys``
    need them; all problems in one ``UsageError``."""
    folders = {field: _condition_folder(field, args, keys, model) for field in CONDITION_FILES}
    problems = []
    for field, folder in folders.items():
        if folder is None:
            continue
        _, _, what, exts = CONDITION_FILES[field]
        files = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in exts and p.is_file()}
        for clip in clips:
            path = files.get(clip.name)
            if path is None:
                problems.append(f"{clip.path.name} has no {what} in {folder}: add {clip.name}{exts[0]}")
                continue
            if field == "mask":
                try:
                    count = probe(path)[0]
                except UsageError as e:
                    problems.append(str(e))
                    continue
                if count < clip.frames:
                    problems.append(f"mask video {path.name} has {count} frames, fewer than the {clip.frames} of "
                                    f"{clip.path.name}")
                    continue
            setattr(clip, field, path)
    if problems:
        raise UsageError(f"{len(problems)} input problem(s), nothing written: " + "; ".join(problems))


def default_text_len(preset, model_dir: str | None) -> int:
    """256 text tokens; for models with identity references plus the subject image's LLaVA features in place of
    its ``<image>`` token (the model directory's tower's count, 576 at full size: 831)."""
    from hcjax.models.text.templates import MAX_TEXT
    from hcjax.pipelines.custom_text import IMAGE_FEATURES

    if preset.mechanism("identity") is None:
        return MAX_TEXT
    if model_dir is None:
        return MAX_TEXT + IMAGE_FEATURES - 1
    from hcjax.convert.text_encoder_dir import read_llava_entry

    return MAX_TEXT + read_llava_entry(model_dir).vision_cfg.num_patches - 1


def prepare(args: argparse.Namespace) -> Plan:
    """Every check, no heavy work."""
    from hcjax.convert import ModelDirError, read_model_info
    from hcjax.convert.audio_encoder_dir import has_audio_encoder
    from hcjax.convert.text_encoder_dir import has_llava_image_path, has_text_encoders
    from hcjax.training.avatar_cond import is_avatar
    from hcjax.training.cond_inputs import record_extras
    from hcjax.training.humo_cond import is_humo

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
    extra = record_extras(preset)
    keys = tuple(k for k, _, _ in extra)
    avatar, humo = is_avatar(preset), is_humo(preset)
    subject_text = "ref_latents" in keys and model_dir is not None and not (avatar or humo)   # the plain caption
    if subject_text and not has_llava_image_path(model_dir):
        raise UsageError(f"the model {preset.name} encodes each caption together with its subject image through "
                         f"LLaVA, and model directory {model_dir} has no LLaVA image path: convert the text encoders "
                         "again from the LLaVA folder (tools/convert_text_encoders.py --llm LLAVA_DIR)")
    natural = default_text_len(preset, model_dir)
    text_len = natural if args.text_len is None else args.text_len
    if text_len < 1:
        raise UsageError(f"--text-len must be positive, got {text_len}")
    if subject_text and text_len < natural:
        raise UsageError(f"--text-len {text_len}: the caption with its subject image is {natural} tokens (256 + the "
                         f"image's features less one), and cutting it drops image features; leave --text-len out or "
                         f"give at least {natural}")
    if humo and "audio_feats" in keys:
        check_humo_whisper(preset, model_dir)
    elif "audio_feats" in keys and model_dir is not None and not has_audio_encoder(model_dir):
        raise UsageError(f"model directory {model_dir} has no audio encoder: add it with tools/convert_whisper.py")
    multiple = preset.vae.spatial_ratio * preset.dit.patch_size[1]
    sizes = parse_sizes(args.buckets, multiple)
    frames = parse_frames(args.frames, preset.vae.temporal_ratio)
    clips = find_clips(Path(args.src), sizes, frames)
    find_conditions(clips, args, preset.name, keys)
    # face masks are read before any model is loaded: an all-black one has no face region
    problems = []
    for clip in clips:
        if clip.face is not None:
            try:
                face_mask(clip, preset.vae.spatial_ratio)
            except ValueError as e:
                problems.append(f"{clip.face.name}: {e}")
    if humo:
        problems += humo_audio_problems(clips)
    if problems:
        raise UsageError(f"{len(problems)} input problem(s), nothing written: " + "; ".join(problems))
    meta = {"source": {"model": os.path.abspath(args.model) if model_dir else args.model,
                       "videos": os.path.abspath(args.src),
                       "text": ("llava with subject image" if subject_text else "encoders") if model_dir
                       else "placeholder"},
            "pixel_buckets": [list(s) for s in sizes], "frame_counts": frames}
    if keys:
        meta["conditions"] = {"keys": list(keys), "seed": args.seed, "reference": "images" if args.ref_images
                              else "first frame"}
        if "face_mask" in keys:
            meta["conditions"]["face_mask"] = "images" if args.face_masks else "all ones"
        if humo:
            meta["conditions"]["ref_latents"] = "posterior mean, fitted on white"
    return Plan(preset, model_dir, clips, out, text_len, args.text_dtype, not args.no_tiling, meta, extra,
                args.seed, subject_text)


def check_humo_whisper(preset, model_dir: str | None) -> None:
    """HuMo's Whisper, from its config alone: present, as wide as the audio projection, and with 4k layers (HuMo
    averages 4 equal groups of hidden states plus the last one: whisper-large-v3's 33)."""
    from hcjax.cli.common import check_audio_encoder

    cfg = check_audio_encoder(preset, model_dir, "audio", "HuMo's audio projection", "HuMo", "whisper-large-v3")
    if cfg.encoder_layers < 4 or cfg.encoder_layers % 4:
        raise UsageError(f"HuMo groups the audio encoder's hidden states in 4 + 1; a Whisper with "
                         f"{cfg.encoder_layers} layers does not fit: convert whisper-large-v3 (32 layers)")


def humo_audio_problems(clips: list[Clip]) -> list[str]:
    """Each clip's audio file read (``avatar_audio``: 16 kHz mono, finite) and long enough for its kept frames at
    HuMo's 25 fps; the problems, each naming its fix."""
    from hcjax.cli.sample_humo import FPS
    from hcjax.io import MediaError
    from hcjax.io.audio import SAMPLE_RATE, frames_of_audio
    from hcjax.pipelines.avatar_media import avatar_audio

    problems = []
    for clip in clips:
        if clip.audio is None:
            continue
        try:
            samples = avatar_audio(clip.audio, FPS)
        except MediaError as e:
            problems.append(str(e))
            continue
        covered = frames_of_audio(len(samples), FPS)
        if covered < clip.frames:
            problems.append(f"audio {clip.audio.name} covers {covered} video frames ({len(samples) / SAMPLE_RATE:.2f} "
                            f"s at {FPS} fps), fewer than the {clip.frames} of {clip.path.name}: give its full sound "
                            "or shorter --frames")
    return problems


def fit_text(states: np.ndarray, mask: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``[L', D]`` states and ``[L']`` mask zero-padded or cut to ``length`` tokens."""
    n = min(length, states.shape[0])
    s, m = np.zeros((length, states.shape[1]), np.float32), np.zeros(length, np.int32)
    s[:n], m[:n] = states[:n], mask[:n]
    return s, m


def load_models(plan: Plan):
    """``(vae_params, text encoders or None)``: the model directory's (with LLaVA's image path as
    ``encoders.image_path`` for subject text), or random VAE weights for a preset."""
    import jax

    from hcjax.models import random_params

    if plan.model_dir is None:
        vae_params, encoders = random_params(plan.preset.vae, 0), None
    else:
        from hcjax.convert import load_model_dir
        from hcjax.convert.text_encoder_dir import load_text_encoders

        vae_params, encoders = load_model_dir(plan.model_dir, ("vae",))[2], load_text_encoders(plan.model_dir)
        if plan.subject_text:
            from hcjax.convert.text_encoder_dir import load_llava_image_path

            from hcjax.pipelines.subject_text import SubjectTextEncoders

            encoders = SubjectTextEncoders(encoders, load_llava_image_path(plan.model_dir))
    return jax.device_put(vae_params, jax.local_devices()[0]), encoders   # committed: one compile per shape


def load_audio_encoder(plan: Plan):
    """``(whisper config, params)`` for models that read audio (the model directory's, or random weights for a
    preset), else None."""
    if not any(k == "audio_feats" for k, _, _ in plan.extra):
        return None
    if plan.model_dir is None:
        from hcjax.models import random_params

        cfg, params = plan.preset.audio_encoder, random_params(plan.preset.audio_encoder, 0)
    else:
        from hcjax.convert.audio_encoder_dir import load_audio_encoder as load

        cfg, params = load(plan.model_dir)
    channels = next(shape[-1] for k, shape, _ in plan.extra if k == "audio_feats")   # Custom's or Avatar's adapter
    if cfg.d_model != channels:
        raise UsageError(f"the audio encoder is {cfg.d_model} wide, the model's audio adapter reads {channels}; "
                         "convert the Whisper model the checkpoint was trained with")
    return cfg, params


def face_mask(clip: Clip, ratio: int) -> np.ndarray:
    """``face_mask [1, h / ratio, w / ratio]`` of a clip: its mask image (white = face) resized and cropped like the
    clip, binary at pixel size, bilinear to latent size; all ones without one."""
    from hcjax.io import read_image, resize_center_crop
    from hcjax.pipelines.avatar_media import latent_face_mask, mask_image

    (h, w), latent = clip.size, (clip.size[0] // ratio, clip.size[1] // ratio)
    if clip.face is None:
        return np.ones((1, *latent), np.float32)
    pixels = mask_image(resize_center_crop(read_image(clip.face), h, w), h, w)
    return latent_face_mask(pixels, latent)[None]


def subject_image(clip: Clip, pixels: np.ndarray) -> np.ndarray:
    """The clip's reference image as given (uint8 ``[h', w', 3]``), or its first kept frame."""
    from hcjax.io import read_image

    return read_image(clip.ref) if clip.ref is not None else pixels[0]


def conditions(plan: Plan, i: int, clip: Clip, pixels: np.ndarray, subject: np.ndarray, vae_params, whisper,
               tiling) -> dict:
    """The condition keys of one clip: ``pixels`` are its kept frames, ``uint8 [F, h, w, 3]`` at the bucket size;
    ``subject`` its ``subject_image``."""
    import jax

    from hcjax.conditioning.audio_features import audio_condition
    from hcjax.io import image_to_unit_range, read_image, read_video, resize_center_crop
    from hcjax.pipelines.custom_media import editing_pixels
    from hcjax.pipelines.custom_text import pad_image

    from hcjax.pipelines.custom import vae_posterior
    from hcjax.pipelines.humo_media import reference_pixels
    from hcjax.training.avatar_cond import is_avatar
    from hcjax.training.humo_cond import is_humo

    vae = plan.preset.vae
    posterior = vae_posterior(vae)
    k_ref, k_bg, k_mask = jax.random.split(jax.random.fold_in(jax.random.key(plan.seed), i), 3)
    avatar, humo = is_avatar(plan.preset), is_humo(plan.preset)

    def sample(video, key):   # float [F, h, w, 3] in [-1, 1]
        dist = posterior(vae_params, np.asarray(video, np.float32)[None], tiling)
        return np.asarray(dist.sample(key), np.float32)[0] * np.float32(vae.scaling_factor)

    def mean_frames(images):   # float [n, h, w, 3] in [-1, 1], each a one-frame video -> [n, h', w', C]
        dist = posterior(vae_params, np.asarray(images, np.float32)[:, None], tiling)
        return np.asarray(dist.mean, np.float32)[:, 0] * np.float32(vae.scaling_factor)

    out, (f, h, w) = {}, (pixels.shape[0], *clip.size)
    for key, _, _ in plan.extra:
        if key == "ref_latents" and humo:   # the first frame is at the clip's size: its canvas is itself
            out[key] = mean_frames(reference_pixels([subject], h, w))
        elif key == "ref_latents":
            if clip.ref is None:
                image = subject
            else:
                image = resize_center_crop(subject, h, w) if avatar else pad_image(subject, (h, w))
            out[key] = sample(image_to_unit_range(image[None]), k_ref)
        elif key == "bg_latents":
            masked, mask = editing_pixels(pixels, np.stack([resize_center_crop(x, h, w)
                                                            for x in read_video(clip.mask)[:f]]))
            out[key] = np.concatenate([sample(masked, k_bg), sample(mask, k_mask)], axis=-1)
        elif key == "audio_feats":
            task = "humo" if humo else "avatar" if avatar else "custom"   # HuMo: no reference slots (num_ref 0)
            out[key] = np.asarray(audio_condition(clip.audio, f, *whisper, task=task), np.float32)
        elif key == "face_mask":
            out[key] = face_mask(clip, vae.spatial_ratio)
        elif key == "first_latents":
            out[key] = sample(image_to_unit_range(pixels[:1]), jax.random.fold_in(k_ref, 2))
        elif key == "emotion_latents":
            image = resize_center_crop(read_image(clip.emotion), h, w)
            out[key] = sample(image_to_unit_range(image[None]), jax.random.fold_in(k_ref, 1))
    return out


def encode_text(plan: Plan, encoders, caption: str, frames: int, subject: np.ndarray | None = None
                ) -> tuple[dict, int]:
    """``({text_states, text_mask, text_pooled}, tokens cut)`` of one caption at ``--text-len``. For subject text
    (``plan.subject_text``) ``subject`` is the reference image (uint8 ``[h, w, 3]``); None gives the null text."""
    from hcjax.pipelines import text_inputs

    d = plan.preset.dit
    if encoders is None:
        text = text_inputs.placeholder(caption, d.text_dim, d.pooled_dim, length=plan.text_len)
    elif plan.subject_text:
        from hcjax.pipelines.custom_text import DEFAULT_NAME

        try:
            text = (encoders.encode_uncond(caption, 1) if subject is None
                    else encoders.encode(caption, [subject], [DEFAULT_NAME]))
        except ValueError as e:   # a caption so long that truncation drops the image token
            raise UsageError(f"cannot encode the caption {caption[:40]!r}... with its subject image: {e}; "
                             "shorten it") from None
    else:
        text = encoders.encode([caption], frames)
    states, mask = fit_text(np.asarray(text.states)[0], np.asarray(text.mask)[0], plan.text_len)
    cut = int(np.asarray(text.mask)[0].sum()) - int(mask.sum())
    return {"text_states": states, "text_mask": mask, "text_pooled": np.asarray(text.pooled, np.float32)[0]}, cut


def examples(plan: Plan, vae_params, encoders) -> Iterator[dict]:
    """One record per clip, encoded as it is needed."""
    from hcjax.configs import VAETiling
    from hcjax.io import image_to_unit_range, read_video, resize_center_crop

    from hcjax.pipelines.custom import vae_posterior

    vae = plan.preset.vae
    posterior = vae_posterior(vae)
    whisper = load_audio_encoder(plan)
    for i, clip in enumerate(plan.clips):
        (h, w), f = clip.size, clip.frames
        frames = read_video(clip.path)[:f]
        if len(frames) < f:
            raise UsageError(f"{clip.path.name}: decoded {len(frames)} frames, fewer than the {f} probed; "
                             "re-encode it with ffmpeg")
        pixels = np.stack([resize_center_crop(x, h, w) for x in frames])
        tiling = VAETiling() if plan.tiling and (h > 256 or w > 256 or f > 64) else None
        latents = np.asarray(posterior(vae_params, image_to_unit_range(pixels)[None], tiling).mean, np.float32)[0]
        latents = latents * np.float32(vae.scaling_factor)
        subject = subject_image(clip, pixels) if plan.extra else None
        text, cut = encode_text(plan, encoders, clip.caption, f, subject)
        extra = conditions(plan, i, clip, pixels, subject, vae_params, whisper, tiling)
        print(f"[{i + 1}/{len(plan.clips)}] {clip.path.name}: {f} frames at {h}x{w} -> latents "
              f"{list(latents.shape)}" + "".join(f", {k} {list(v.shape)}" for k, v in extra.items())
              + (f" (caption cut by {cut} tokens)" if cut else ""), flush=True)
        yield {"latents": latents.astype(np.float32), **text, **extra, "caption": clip.caption}


def run(plan: Plan) -> None:
    from hcjax.training.data_spec import DataSpec
    from hcjax.training.tfds_builder import write_dataset

    p = plan.preset
    spec = DataSpec(p.vae.latent_channels, plan.text_len, p.dit.text_dim, p.dit.pooled_dim,
                    float(p.vae.scaling_factor), plan.text_dtype, plan.extra)
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
    parser.add_argument("--text-len", type=int, help="text tokens per clip (padded or cut; default 256, for "
                        "HunyuanCustom 256 + the subject image's LLaVA features less one: 831)")
    parser.add_argument("--text-dtype", choices=["float16", "float32"], default="float16",
                        help="how text states are stored (read back as float32)")
    parser.add_argument("--no-tiling", action="store_true", help="encode large clips whole (more memory)")
    parser.add_argument("--ref-images", help="HunyuanCustom / Avatar / HuMo: folder of NAME.png subject images "
                        "(default: each clip's first frame)")
    parser.add_argument("--audio", help="HunyuanCustom audio / Avatar / HuMo: folder of NAME.wav, the sound of each "
                        "clip (25 fps)")
    parser.add_argument("--masks", help="HunyuanCustom editing: folder of NAME.mp4 mask videos (white = edit)")
    parser.add_argument("--face-masks", help="Avatar / HuMo: folder of NAME.png face masks (white = face; default: all "
                        "ones, the official fallback when no face is found)")
    parser.add_argument("--emotion-images", help="Avatar emotion models (required there): folder of NAME.png "
                        "emotion images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the conditions' VAE posterior samples")
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
