"""``hcjax sample`` for the HunyuanCustom models: ``--ref-image`` (repeatable, with ``--ref-name`` words for the
template), ``--audio`` (audio model), ``--video`` / ``--mask`` (editing model). Every input is read and checked
in ``prepare`` before any model work; ``execute`` encodes the conditions, samples and writes the MP4."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from hcjax.cli.common import UsageError, check_audio_encoder

AUDIO_FPS = 25   # the audio windows assume 25 video frames per second (640 samples at 16 kHz)


def _frames_up_to(n: int) -> int:
    """The largest valid frame count (4k+1) not above ``n`` (at least 1)."""
    return max((n - 1) // 4 * 4 + 1, 1)


@dataclasses.dataclass
class CustomPlan:
    images: list            # RGB uint8 reference images as read
    names: list[str]        # one template word per image
    audio: np.ndarray | None = None          # 16 kHz mono samples
    video: np.ndarray | None = None          # uint8 [F, H, W, 3] source (editing)
    mask: np.ndarray | None = None           # uint8 [F, H, W, 3] mask video (editing)
    size: tuple[int, int] | None = None      # (height, width) the editing video imposes
    frames: int | None = None                # frame count the editing video imposes
    audio_strength: float = 1.0
    expand_scale: int = 0
    step_cache: bool = True


def is_custom(preset) -> bool:
    return preset.mechanism("identity") is not None


def _read(reader, path):
    from hcjax.io import MediaError

    try:
        return reader(path)
    except MediaError as e:
        raise UsageError(str(e)) from None


def _names(args, count: int) -> list[str]:
    from hcjax.pipelines.custom_text import DEFAULT_NAME

    names = args.ref_name or ([DEFAULT_NAME] if count == 1 else [])
    if len(names) != count:
        raise UsageError(f"{count} reference image(s) but {len(names)} --ref-name word(s): give one --ref-name per "
                         "--ref-image, in the same order (the prompt template says 'The NAME looks like <image>' "
                         "for each subject)")
    return list(names)


def _editing(args, plan: CustomPlan) -> None:
    from hcjax.io import read_video

    if args.video is None or args.mask is None:
        raise UsageError("the editing model needs --video SOURCE.mp4 and --mask MASK.mp4 (white = the area to "
                         "regenerate)")
    video, mask = _read(read_video, args.video), _read(read_video, args.mask)
    if video.shape[1:3] != mask.shape[1:3]:
        raise UsageError(f"--mask is {mask.shape[1]}x{mask.shape[2]} but --video is {video.shape[1]}x{video.shape[2]}: "
                         "give a mask video of the same size")
    h, w = video.shape[1:3]
    if h % 16 or w % 16:
        raise UsageError(f"--video is {h}x{w}; the size must be multiples of 16: resize it (e.g. ffmpeg -vf "
                         f"scale={w // 16 * 16}:{h // 16 * 16}) and its mask the same way")
    if (args.height not in (None, h)) or (args.width not in (None, w)):
        raise UsageError(f"the editing model samples at the size of --video ({h}x{w}); drop --height / --width")
    available = min(len(video), len(mask))
    frames = args.frames if args.frames is not None else _frames_up_to(available)
    if frames > available:
        raise UsageError(f"--frames {frames} but --video and --mask have {available} frames in common; use "
                         f"--frames {_frames_up_to(available)} or less")
    plan.video, plan.mask, plan.size, plan.frames = video[:frames], mask[:frames], (h, w), frames


def prepare_custom(args: argparse.Namespace, preset, model_dir: str | None) -> CustomPlan:
    """Reads and checks the Custom inputs and, for the audio model, the audio encoder it will use (``UsageError``
    naming the fix)."""
    from hcjax.io import read_image

    if not args.ref_image:
        raise UsageError(f"{preset.name} generates the subject of a reference image: give --ref-image PATH (repeat "
                         "it for several subjects)")
    plan = CustomPlan([_read(read_image, p) for p in args.ref_image], _names(args, len(args.ref_image)),
                      audio_strength=args.audio_strength, expand_scale=args.expand_scale,
                      step_cache=not args.no_step_cache)
    editing = preset.mechanism("editing") is not None
    if not editing and (args.video or args.mask):
        raise UsageError(f"{preset.name} takes no --video / --mask; use an editing model (hunyuan-custom-editing)")
    if editing:
        _editing(args, plan)
    if preset.mechanism("audio") is None:
        if args.audio:
            raise UsageError(f"{preset.name} takes no --audio; use an audio model (hunyuan-custom-audio)")
        return plan
    if args.audio is None:
        raise UsageError(f"{preset.name} is driven by audio: give --audio PATH (wav, or any format ffmpeg reads)")
    check_audio_encoder(preset, model_dir, "audio", "the model's AudioNet", "HunyuanCustom")
    from hcjax.io.audio import load_audio

    plan.audio = _read(load_audio, args.audio)
    return plan


def check_audio_covers(plan: CustomPlan, frames: int) -> None:
    """The audio must last as long as the video (the official code would pad it with silence)."""
    from hcjax.io.audio import SAMPLE_RATE, frames_of_audio

    if plan.audio is None:
        return
    covered = frames_of_audio(len(plan.audio), AUDIO_FPS)
    if covered < frames:
        raise UsageError(f"--audio covers {covered} video frames ({len(plan.audio) / SAMPLE_RATE:.2f} s at {AUDIO_FPS} "
                         f"fps) but the video has {frames}: give a longer audio or --frames {_frames_up_to(covered)}")


def refuse_custom_flags(args, preset) -> None:
    """The Custom flags on a model that is not HunyuanCustom."""
    given = [f for f, v in (("--ref-image", args.ref_image), ("--ref-name", args.ref_name), ("--audio", args.audio),
                            ("--video", args.video), ("--mask", args.mask)) if v]
    if given:
        raise UsageError(f"{preset.name} takes no {' / '.join(given)}; use a HunyuanCustom model (hunyuan-custom, "
                         "hunyuan-custom-audio, hunyuan-custom-editing, or their tiny-custom* stand-ins)")


def _audio_features(plan: CustomPlan, preset, model_dir, frames: int, seed: int) -> np.ndarray:
    from hcjax.conditioning.audio_features import audio_condition
    from hcjax.models import random_params

    if model_dir is not None:
        from hcjax.convert.audio_encoder_dir import load_audio_encoder

        cfg, params = load_audio_encoder(model_dir)
    else:
        cfg, params = preset.audio_encoder, random_params(preset.audio_encoder, seed)
    return np.asarray(audio_condition(plan.audio, frames, cfg, params, "custom"))


def _texts(plan: CustomPlan, main_plan):
    """``(text, negative)``: LLaVA with the subject images (model directories with encoders) or the stand-ins of
    random-weight presets."""
    if main_plan.prompts is None:
        return main_plan.text, main_plan.negative
    from hcjax.convert.text_encoder_dir import load_llava_image_path, load_text_encoders
    from hcjax.pipelines.subject_text import SubjectTextEncoders

    encoders = SubjectTextEncoders(load_text_encoders(main_plan.model_dir),
                                   load_llava_image_path(main_plan.model_dir))
    prompt, negative_prompt = main_plan.prompts
    try:
        return (encoders.encode(prompt, plan.images, plan.names),
                encoders.encode_uncond(negative_prompt, len(plan.images)))
    except ValueError as e:   # e.g. a prompt so long that truncation drops the image tokens
        raise UsageError(f"cannot encode the prompt with the reference images: {e}; shorten --prompt") from None


def execute_custom(plan: CustomPlan, main_plan, dit_params, vae_params) -> object:
    """Samples with ``pipelines.custom.generate_custom``; returns its ``SampleResult``."""
    from hcjax.pipelines.custom import CustomInputs, generate_custom
    from hcjax.pipelines.custom_media import editing_pixels, reference_pixels

    r = main_plan.request
    inputs = CustomInputs(reference_pixels(plan.images, r.height, r.width), audio_strength=plan.audio_strength)
    if plan.audio is not None:
        inputs.audio_feats = _audio_features(plan, main_plan.preset, main_plan.model_dir, r.frames, main_plan.seed)
    if plan.video is not None:
        inputs.masked_video, inputs.mask = editing_pixels(plan.video, plan.mask, plan.expand_scale)
    text, negative = _texts(plan, main_plan)
    return generate_custom(main_plan.preset, dit_params, vae_params, text, r, inputs, negative,
                           step_cache=plan.step_cache, progress=main_plan.progress)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("HunyuanCustom")
    g.add_argument("--ref-image", action="append", help="subject image (repeat for several subjects). Avatar: the "
                                                        "character image; HuMo: a reference image (repeatable)")
    g.add_argument("--ref-name", action="append",
                   help="the subject's word for the prompt template, one per --ref-image (default for one image: "
                        "object)")
    g.add_argument("--audio", help="driving audio (audio model); must cover the video's frames at 25 fps. Avatar: "
                                   "character 1's audio; it sets the video's length. HuMo: the driving audio "
                                   "(must cover the video)")
    g.add_argument("--audio-strength", type=float, default=1.0, help="scale of the audio's effect (official 1.0)")
    g.add_argument("--video", help="source video to edit (editing model; sets size and frame count)")
    g.add_argument("--mask", help="mask video of the same size, white = area to regenerate (editing model)")
    g.add_argument("--expand-scale", type=int, default=0, help="grow (>0) or shrink (<0) the mask, in pixels")
    g.add_argument("--no-step-cache", action="store_true",
                   help="run every step in full (the official step cache re-runs only the last block on 8 of 30 "
                        "steps; Avatar: 20 of 50)")
