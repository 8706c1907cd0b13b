"""``hcjax sample`` for HunyuanVideo-Avatar: ``--ref-image`` (the character image; it sets the video size),
``--audio`` / ``--audio2`` (one per character; the audio sets the video length), ``--face-box`` / ``--face-mask``
(one face per character). Every input is read and checked in ``prepare_avatar`` before any model work;
``execute_avatar`` encodes the audio and the text, samples and returns the ``SampleResult``."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from hcjax.cli.common import (UsageError, check_audio_encoder, embeds_with_negative, is_small,
                              one_video_text_problems, read_media)

MAX_FRAMES = 400   # the release uses at most 400 audio frames (16 s at 25 fps)


@dataclasses.dataclass
class AvatarPlan:
    reference: np.ndarray               # RGB uint8 [h, w, 3], resized by the official rule (the video size)
    audios: list[np.ndarray]            # 16 kHz mono samples, one per character
    face_masks: np.ndarray | None       # [K, h / 8, w / 8] latent masks; None: the whole image (one character)
    frames: int                         # video frames: those the longest audio covers, at most MAX_FRAMES
    prompt: str | None = None           # set when the model directory's encoders encode the text
    negative_prompt: str | None = None
    step_cache: bool = True


def is_avatar(preset) -> bool:
    return preset.mechanism("face_audio") is not None


class _FaceAction(argparse.Action):
    """``--face-box`` / ``--face-mask`` into one ordered list of ``(flag, value)``: character 1 is the first."""

    def __call__(self, parser, namespace, values, option_string=None):
        faces = list(getattr(namespace, self.dest) or [])
        faces.append((option_string, values))
        setattr(namespace, self.dest, faces)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("HunyuanVideo-Avatar (--ref-image: the character image; --audio: character 1)")
    g.add_argument("--audio2", help="driving audio of character 2 (needs a face per character)")
    g.add_argument("--face-box", dest="faces", action=_FaceAction, metavar="X,Y,W,H",
                   help="face of the next character, in pixels of --ref-image as given (grown 3x about its centre "
                        "for the audio mask, as the release); repeat in character order. One character without a "
                        "face: the whole image (the release's fallback when it detects no face)")
    g.add_argument("--face-mask", dest="faces", action=_FaceAction, metavar="IMAGE",
                   help="face of the next character as a mask image of --ref-image's size (white = face, taken "
                        "as is); mixes with --face-box in character order")
    g.add_argument("--image-size", type=int,
                   help="short side of the video (default 704; small presets: their height); the image is scaled "
                        "to it, sides rounded to multiples of 64, area capped (official rule)")


def refuse_avatar_flags(args: argparse.Namespace, preset) -> None:
    """The Avatar-only flags on a model that is not HunyuanVideo-Avatar."""
    given = [f for f, v in (("--audio2", args.audio2), ("--face-box / --face-mask", args.faces),
                            ("--image-size", args.image_size)) if v]
    if given:
        raise UsageError(f"{preset.name} takes no {' / '.join(given)}; use a HunyuanVideo-Avatar model "
                         "(hunyuan-avatar, or tiny-avatar for random weights)")


def _refuse_other_flags(args: argparse.Namespace, preset) -> None:
    why = {"--frames": "the audio sets the length (as many frames as it covers at 25 fps, at most 400 = 16 s, the "
                       "official cap); cut the audio instead",
           "--height / --width": "the reference image sets the size; use --image-size for its short side",
           "--image / --resolution": "give the character image as --ref-image"}
    given = {"--frames": args.frames is not None,
             "--height / --width": args.height is not None or args.width is not None,
             "--image / --resolution": args.image is not None or args.resolution is not None}
    for flag, on in given.items():
        if on:
            raise UsageError(f"{preset.name} takes no {flag}: {why[flag]}")
    custom = [f for f, on in (("--ref-name", args.ref_name), ("--video", args.video), ("--mask", args.mask),
                              ("--audio-strength", args.audio_strength != 1.0), ("--expand-scale", args.expand_scale))
              if on]
    if custom:
        raise UsageError(f"{preset.name} takes no {' / '.join(custom)} (HunyuanCustom flags)")
    if args.fps not in (None, 25.0):
        raise UsageError(f"{preset.name} makes 25 fps video (its audio windows are 25 fps); drop --fps")


def _reference(args, preset) -> tuple[np.ndarray, tuple[int, int]]:
    """The resized character image and the size of the image as given."""
    from hcjax.io import read_image
    from hcjax.pipelines.avatar_media import IMAGE_SIZE, reference_image

    if not args.ref_image:
        raise UsageError(f"{preset.name} animates the character of an image: give --ref-image PATH")
    if len(args.ref_image) > 1:
        raise UsageError(f"{preset.name} takes one --ref-image (all characters in one image, one face each); got "
                         f"{len(args.ref_image)}")
    image = read_media(read_image, args.ref_image[0], "--ref-image")
    size = args.image_size or (IMAGE_SIZE if not is_small(preset) else preset.sampler.height)
    try:
        return reference_image(image, size), image.shape[:2]
    except ValueError as e:
        raise UsageError(f"--ref-image: {e}") from None


def _faces(args, count: int, ref_hw: tuple[int, int], orig_hw: tuple[int, int]) -> np.ndarray | None:
    """Latent face masks ``[K, h / 8, w / 8]`` of the ``count`` characters (None: one character, whole image)."""
    from hcjax.pipelines.avatar_media import face_masks, parse_face_box

    given = args.faces or []
    if len(given) != count and not (count == 1 and not given):
        what = "one face (or none: the whole image)" if count == 1 else "one face each"
        raise UsageError(f"{count} character(s) (--audio{' and --audio2' if count == 2 else ''}) need {what}, got "
                         f"{len(given)} --face-box / --face-mask; give them in character order")
    if not given:
        return None
    faces = []
    for k, (flag, value) in enumerate(given):
        if flag == "--face-box":
            faces.append(read_media(parse_face_box, value, "--face-box"))
        else:
            faces.append(value)
            _check_mask_size(value, ref_hw, orig_hw, k)
    try:
        return face_masks(ref_hw, faces, orig_hw=orig_hw)
    except ValueError as e:   # a box outside the image, an all-black mask (messages name the character / file)
        raise UsageError(str(e)) from None


def _check_mask_size(path: str, ref_hw, orig_hw, k: int) -> None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise UsageError(f"--face-mask: no mask image at {path}; check the path") from None
    except Exception as e:  # noqa: BLE001 - unreadable, truncated, not an image
        raise UsageError(f"--face-mask: cannot read mask image {path}: {e}; convert it to PNG") from None
    if (h, w) not in (tuple(orig_hw), tuple(ref_hw)):
        raise UsageError(f"--face-mask of character {k + 1} ({path}) is {w}x{h} (WxH) but --ref-image is "
                         f"{orig_hw[1]}x{orig_hw[0]}: give a mask of the image's size (white = face)")


def _text(args, preset, model_dir, plan: AvatarPlan):
    """``(text, negative)`` embeddings now (``--text-embeds``, random-weight stand-ins), or ``(None, None)`` with
    the prompts kept in ``plan`` for the model directory's encoders."""
    from hcjax.convert.text_encoder_dir import has_llava_image_path, has_text_encoders
    from hcjax.pipelines import text_inputs
    from hcjax.pipelines.avatar_text import AVATAR_NEGATIVE, avatar_prompt

    if args.text_embeds:
        return embeds_with_negative(args.text_embeds, preset)
    if args.prompt is None:
        raise UsageError("give --prompt TEXT (or --text-embeds FILE)")
    if model_dir is not None:
        if not has_text_encoders(model_dir):
            raise UsageError("this model directory has no text encoders: add them with "
                             "tools/convert_text_encoders.py (--llm LLAVA_DIR), or pass --text-embeds FILE")
        if not has_llava_image_path(model_dir):
            raise UsageError("this model encodes the prompt together with the character image through LLaVA, and "
                             "this model directory has no LLaVA image path: convert the text encoders again from "
                             "the LLaVA folder (tools/convert_text_encoders.py --llm LLAVA_DIR), or pass "
                             "--text-embeds FILE")
        plan.prompt, plan.negative_prompt = args.prompt, args.negative_prompt
        return None, None
    d = preset.dit
    negative = AVATAR_NEGATIVE if args.negative_prompt is None else args.negative_prompt
    return (text_inputs.placeholder(avatar_prompt(args.prompt), d.text_dim, d.pooled_dim),
            text_inputs.placeholder(negative, d.text_dim, d.pooled_dim))


def prepare_avatar(args: argparse.Namespace, preset, model_dir: str | None):
    """Reads and checks every Avatar input -> ``(AvatarPlan, SampleRequest, text, negative)`` (``UsageError``
    naming the fix; the text is None when the model directory's encoders encode it in ``execute_avatar``)."""
    from hcjax.io.audio import frames_of_audio
    from hcjax.pipelines import SampleRequest, avatar
    from hcjax.pipelines.avatar_media import FPS, avatar_audio

    _refuse_other_flags(args, preset)
    reference, orig_hw = _reference(args, preset)
    if args.audio is None:
        raise UsageError(f"{preset.name} is driven by audio: give --audio PATH (character 1; --audio2 for a second)")
    audios = [read_media(avatar_audio, path, flag)
              for flag, path in (("--audio", args.audio), ("--audio2", args.audio2)) if path is not None]
    faces = _faces(args, len(audios), reference.shape[:2], orig_hw)
    check_audio_encoder(preset, model_dir, "face_audio", "the audio adapter", "HunyuanVideo-Avatar")
    frames = min(max(frames_of_audio(len(a), FPS) for a in audios), MAX_FRAMES)
    plan = AvatarPlan(reference, audios, faces, frames, step_cache=not args.no_step_cache)
    try:
        request = SampleRequest.defaults(preset, height=reference.shape[0], width=reference.shape[1],
                                         steps=args.steps, shift=args.shift, seed=args.seed,
                                         embedded_guidance=args.guidance, cfg_scale=args.cfg_scale)
    except ValueError as e:
        raise UsageError(str(e)) from None
    text, negative = _text(args, preset, model_dir, plan)
    a = preset.mechanism("face_audio")
    zeros = lambda *shape: np.broadcast_to(np.float32(0), shape)   # noqa: E731 - shapes only, no memory
    stand_in = avatar.AvatarInputs(zeros(*reference.shape), zeros(len(audios), frames, a.window, a.layers, a.channels),
                                   faces)
    found = request.problems(preset) + avatar.problems(preset, request, stand_in)
    found += one_video_text_problems(preset, text, negative, "Avatar")
    if found:
        raise UsageError("; ".join(found))
    return plan, request, text, negative


def _audio_features(plan: AvatarPlan, preset, model_dir, seed: int) -> np.ndarray:
    """``[K, F, 10, 5, c]``: each character's Whisper windows over the video's ``F`` frames (zero past its audio)."""
    from hcjax.conditioning.audio_features import audio_condition
    from hcjax.models import random_params

    if model_dir is not None:
        from hcjax.convert.audio_encoder_dir import load_audio_encoder

        cfg, params = load_audio_encoder(model_dir)
    else:
        cfg, params = preset.audio_encoder, random_params(preset.audio_encoder, seed)
    return np.stack([np.asarray(audio_condition(a, plan.frames, cfg, params, "avatar")) for a in plan.audios])


def _texts(plan: AvatarPlan, main_plan):
    if plan.prompt is None:
        return main_plan.text, main_plan.negative
    from hcjax.convert.text_encoder_dir import load_llava_image_path, load_text_encoders
    from hcjax.pipelines.avatar_text import encode_avatar_text
    from hcjax.pipelines.subject_text import SubjectTextEncoders

    encoders = SubjectTextEncoders(load_text_encoders(main_plan.model_dir),
                                   load_llava_image_path(main_plan.model_dir))
    try:
        return encode_avatar_text(encoders, plan.prompt, plan.negative_prompt, plan.reference)
    except ValueError as e:   # a prompt so long that truncation drops the image token
        raise UsageError(f"cannot encode the prompt with the character image: {e}; shorten the prompt") from None


def execute_avatar(plan: AvatarPlan, main_plan, dit_params, vae_params):
    """Samples with ``pipelines.avatar.generate_avatar``; returns its ``SampleResult`` (``plan.frames`` frames)."""
    from hcjax.io import image_to_unit_range
    from hcjax.io.audio import SAMPLE_RATE
    from hcjax.pipelines.avatar import AvatarInputs, generate_avatar

    seconds = max(len(a) for a in plan.audios) / SAMPLE_RATE
    if plan.frames == MAX_FRAMES and seconds > MAX_FRAMES / 25:
        print(f"note: the audio lasts {seconds:.1f} s; the video covers its first 16 s ({MAX_FRAMES} frames, the "
              "official cap)")
    inputs = AvatarInputs(image_to_unit_range(plan.reference),
                          _audio_features(plan, main_plan.preset, main_plan.model_dir, main_plan.seed),
                          plan.face_masks)
    text, negative = _texts(plan, main_plan)
    return generate_avatar(main_plan.preset, dit_params, vae_params, text, negative, main_plan.request, inputs,
                           step_cache=plan.step_cache, progress=main_plan.progress)
