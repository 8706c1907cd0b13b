"""``hcjax sample`` for HuMo (``humo``, ``tiny-humo``): ``--ref-image`` (repeatable; none: text + audio),
``--audio`` (required), ``--audio-scale``, ``--mask-out`` (the mask predictor's face probabilities). Every input is
read and checked in ``prepare_humo`` before any model work; ``execute_humo`` encodes the audio, the references and
the text, samples and returns the ``SampleResult`` and the face mask (or None)."""

from __future__ import annotations

import argparse
import dataclasses
import os

import numpy as np

from hcjax.cli.common import (UsageError, check_audio_encoder, embeds_with_negative, one_video_text_problems,
                              read_media)

FPS = 25   # HuMo's audio windows are 25 fps (640 samples at 16 kHz per video frame)


@dataclasses.dataclass
class HumoPlan:
    images: list[np.ndarray]         # RGB uint8 reference images as read (empty: text + audio)
    audio: np.ndarray                # 16 kHz mono samples
    audio_scale: float
    mask_out: str | None = None      # .npy / .png path for the face mask
    prompt: str | None = None        # set when the model directory's encoders encode the text
    negative_prompt: str | None = None


def is_humo(preset) -> bool:
    from hcjax.pipelines.humo import is_humo as humo

    return humo(preset)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("HuMo (--ref-image: reference images, repeatable, none for text + audio; --audio: the "
                             "driving audio; --cfg-scale: the text scale, official 5.0)")
    g.add_argument("--audio-scale", type=float, help="audio guidance scale of the time-adaptive CFG (official 5.5)")
    g.add_argument("--mask-out", metavar="PATH",
                   help="also write the mask predictor's face probabilities of the result: .npy = float32 [T, h, w] "
                        "at latent size; .png = the T latent frames side by side at video size (white = face)")


def refuse_humo_flags(args: argparse.Namespace, preset) -> None:
    """The HuMo-only flags on a model that is not HuMo."""
    given = [f for f, v in (("--audio-scale", args.audio_scale is not None), ("--mask-out", args.mask_out)) if v]
    if given:
        raise UsageError(f"{preset.name} takes no {' / '.join(given)}; use a HuMo model (humo, or tiny-humo for "
                         "random weights)")


def _refuse_other_flags(args: argparse.Namespace, preset) -> None:
    from hcjax.cli.sample_avatar import refuse_avatar_flags

    if args.image is not None or args.resolution is not None:
        raise UsageError(f"{preset.name} takes no --image / --resolution: give reference images as --ref-image "
                         "(fitted into the video size on white)")
    custom = [f for f, on in (("--ref-name", args.ref_name), ("--video", args.video), ("--mask", args.mask),
                              ("--audio-strength", args.audio_strength != 1.0), ("--expand-scale", args.expand_scale),
                              ("--no-step-cache", args.no_step_cache)) if on]
    if custom:
        raise UsageError(f"{preset.name} takes no {' / '.join(custom)} (HunyuanCustom flags)")
    refuse_avatar_flags(args, preset)
    if args.guidance is not None:
        raise UsageError(f"{preset.name} has no guidance embedding: drop --guidance; use --cfg-scale (text) and "
                         "--audio-scale")
    if args.fps not in (None, float(FPS)):
        raise UsageError(f"{preset.name} makes {FPS} fps video (its audio windows are {FPS} fps); drop --fps")


def _mask_out(path: str | None, preset) -> str | None:
    from hcjax.pipelines.humo_media import MASK_SUFFIXES

    if path is None:
        return None
    if preset.mechanism("mask_predictor") is None:
        raise UsageError(f"{preset.name} has no mask predictor: drop --mask-out")
    if not path.lower().endswith(MASK_SUFFIXES):
        raise UsageError(f"--mask-out {path!r} must end in .npy (probabilities) or .png (a strip of the frames)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"the folder of --mask-out {path!r} does not exist; create {folder} first")
    return path


def _text(args, preset, model_dir, plan: HumoPlan):
    """``(text, negative)`` now (``--text-embeds``, random-weight stand-ins), or ``(None, None)`` with the prompts
    kept in ``plan`` for the model directory's text encoders (the T2V path: the prompt alone)."""
    from hcjax.convert.text_encoder_dir import has_text_encoders
    from hcjax.models.text.templates import DEFAULT_NEGATIVE
    from hcjax.pipelines import text_inputs

    if args.text_embeds:
        return embeds_with_negative(args.text_embeds, preset)
    if args.prompt is None:
        raise UsageError("give --prompt TEXT (or --text-embeds FILE)")
    negative = DEFAULT_NEGATIVE if args.negative_prompt is None else args.negative_prompt
    if model_dir is not None:
        if not has_text_encoders(model_dir):
            raise UsageError("this model directory has no text encoders: add them with "
                             "tools/convert_text_encoders.py, or pass --text-embeds FILE")
        plan.prompt, plan.negative_prompt = args.prompt, negative
        return None, None
    d = preset.dit
    return (text_inputs.placeholder(args.prompt, d.text_dim, d.pooled_dim),
            text_inputs.placeholder(negative, d.text_dim, d.pooled_dim))


def prepare_humo(args: argparse.Namespace, preset, model_dir: str | None):
    """Reads and checks every HuMo input -> ``(HumoPlan, SampleRequest, text, negative)`` (``UsageError`` naming
    the fix; the text is None when the model directory's encoders encode it in ``execute_humo``)."""
    from hcjax.io import read_image
    from hcjax.io.audio import SAMPLE_RATE, frames_of_audio
    from hcjax.pipelines import SampleRequest, humo
    from hcjax.pipelines.avatar_media import avatar_audio
    from hcjax.pipelines.humo import AUDIO_SCALE

    _refuse_other_flags(args, preset)
    mask_out = _mask_out(args.mask_out, preset)
    try:
        request = SampleRequest.defaults(preset, frames=args.frames, height=args.height, width=args.width,
                                         steps=args.steps, shift=args.shift, seed=args.seed,
                                         cfg_scale=args.cfg_scale)
    except ValueError as e:
        raise UsageError(str(e)) from None
    found = request.problems(preset)
    if found:
        raise UsageError("; ".join(found))
    images = [read_media(read_image, path, "--ref-image") for path in args.ref_image or []]
    if args.audio is None:
        raise UsageError(f"{preset.name} is driven by audio: give --audio PATH (wav, or any format ffmpeg reads)")
    audio = read_media(avatar_audio, args.audio, "--audio")
    covered = frames_of_audio(len(audio), FPS)
    if covered < request.frames:
        fit = max((covered - 1) // 4 * 4 + 1, 1)
        raise UsageError(f"--audio covers {covered} video frames ({len(audio) / SAMPLE_RATE:.2f} s at {FPS} fps) but "
                         f"the video has {request.frames}: give a longer audio or --frames {fit}")
    cfg = check_audio_encoder(preset, model_dir, "audio", "HuMo's audio projection", "HuMo", "whisper-large-v3")
    if cfg.encoder_layers % 4:
        raise UsageError(f"HuMo groups the audio encoder's hidden states in 4 + 1; a Whisper with "
                         f"{cfg.encoder_layers} layers does not fit: convert whisper-large-v3 (32 layers)")
    plan = HumoPlan(images, audio, AUDIO_SCALE if args.audio_scale is None else args.audio_scale, mask_out)
    text, negative = _text(args, preset, model_dir, plan)
    a = preset.mechanism("audio")
    zeros = lambda *shape: np.broadcast_to(np.float32(0), shape)   # noqa: E731 - shapes only, no memory
    refs = zeros(len(images), request.height, request.width, 3) if images else None
    stand_in = humo.HumoInputs(zeros(request.latent_shape(preset)[0], a.window, a.groups, a.channels), refs)
    found = humo.problems(preset, request, stand_in)
    found += one_video_text_problems(preset, text, negative, "HuMo")
    if found:
        raise UsageError("; ".join(found))
    return plan, request, text, negative


def _audio_features(plan: HumoPlan, preset, model_dir, frames: int, num_ref: int, seed: int) -> np.ndarray:
    """``[T + num_ref, 8, 5, c]``: HuMo's Whisper windows of the video's latent frames, zero for the references."""
    from hcjax.conditioning.audio_features import audio_condition
    from hcjax.models import random_params

    if model_dir is not None:
        from hcjax.convert.audio_encoder_dir import load_audio_encoder

        cfg, params = load_audio_encoder(model_dir)
    else:
        cfg, params = preset.audio_encoder, random_params(preset.audio_encoder, seed)
    return np.asarray(audio_condition(plan.audio, frames, cfg, params, "humo", num_ref=num_ref))


def _texts(plan: HumoPlan, main_plan):
    if plan.prompt is None:
        return main_plan.text, main_plan.negative
    from hcjax.convert.text_encoder_dir import load_text_encoders

    encoders = load_text_encoders(main_plan.model_dir)
    frames = main_plan.request.frames
    return encoders.encode([plan.prompt], frames), encoders.encode([plan.negative_prompt], frames)


def execute_humo(plan: HumoPlan, main_plan, dit_params, vae_params):
    """Samples with ``pipelines.humo.generate_humo`` -> ``(SampleResult, face probabilities [T, h, w] or None)``."""
    from hcjax.pipelines.humo import HumoInputs, encode_conditions, generate_humo, predict_face_mask
    from hcjax.pipelines.humo_media import reference_pixels
    from hcjax.pipelines.progress import PhaseTimer

    p, r = main_plan.preset, main_plan.request
    refs = reference_pixels(plan.images, r.height, r.width) if plan.images else None
    timer = PhaseTimer()
    with timer("encode conditions"):
        inputs = HumoInputs(_audio_features(plan, p, main_plan.model_dir, r.frames, len(plan.images) or 1,
                                            main_plan.seed), refs)
        cond = encode_conditions(p, vae_params, inputs, r)
        text, negative = _texts(plan, main_plan)
    result = generate_humo(p, dit_params, vae_params, text, negative, r, inputs, audio_scale=plan.audio_scale,
                           cond=cond, timer=timer, progress=main_plan.progress)
    mask = None
    if plan.mask_out is not None:
        with timer("face mask"):
            mask = predict_face_mask(p, dit_params, result.latents, text, cond, r.seed)
    return result, mask


def write_face_mask(plan: HumoPlan, probs: np.ndarray, scale: int = 8) -> None:
    """Writes ``probs [T, h, w]`` to ``plan.mask_out`` (``humo_media.write_mask``; a .png strip upscaled by
    ``scale``, the VAE's spatial ratio, to the video size)."""
    from hcjax.pipelines.humo_media import write_mask

    write_mask(plan.mask_out, probs, scale)
