"""``hcjax sample``: a video from text embeddings (and a first-frame image for image-to-video models, subject images
for HunyuanCustom, a character image and its audio for HunyuanVideo-Avatar, reference images and audio for
HuMo).

All inputs are checked first (sizes, frame count, media, embeddings, model directory); then the params are
loaded, the sampling program compiled and run, and the MP4 and its PNG contact sheet (HuMo: and the face mask of
``--mask-out``) written atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import numpy as np

from hcjax.cli import sample_avatar, sample_custom, sample_humo
from hcjax.cli.common import UsageError, is_small, output_path, resolve_model


@dataclasses.dataclass
class Plan:
    preset: object
    model_dir: str | None
    request: object
    text: object
    negative: object
    image: np.ndarray | None
    prompts: tuple[str, str] | None   # (prompt, negative) to encode with the model directory's encoders
    out: str
    sheet: str
    fps: float
    progress: bool
    seed: int
    llava_image: np.ndarray | None = None   # the I2V image as read (uint8), for LLaVA's text path
    custom: sample_custom.CustomPlan | None = None   # HunyuanCustom inputs as read
    avatar: sample_avatar.AvatarPlan | None = None   # HunyuanVideo-Avatar inputs as read
    humo: sample_humo.HumoPlan | None = None         # HuMo inputs as read


TASKS = {"t2v": "hunyuan-video-t2v (random weights: tiny)", "i2v": "hunyuan-video-i2v (random weights: tiny-i2v)",
         "custom": "hunyuan-custom, hunyuan-custom-audio or hunyuan-custom-editing (random weights: tiny-custom, "
                   "tiny-custom-audio, tiny-custom-editing)",
         "avatar": "hunyuan-avatar (random weights: tiny-avatar)", "humo": "humo (random weights: tiny-humo)"}


def task_of(preset) -> str:
    """The ``--task`` a preset performs, from its mechanisms."""
    if sample_humo.is_humo(preset):
        return "humo"
    if sample_avatar.is_avatar(preset):
        return "avatar"
    if sample_custom.is_custom(preset):
        return "custom"
    return "i2v" if preset.image_to_video else "t2v"


def check_task(task: str | None, preset) -> None:
    """``--task`` (optional) must be one of ``TASKS`` and the one the model performs."""
    if task is None:
        return
    if task not in TASKS:
        raise UsageError(f"unknown --task {task!r}; use one of {', '.join(TASKS)} (or leave it out: the model decides)")
    actual = task_of(preset)
    if task != actual:
        raise UsageError(f"--task {task} needs a {task} model: --model {TASKS[task]} or its converted directory; "
                         f"{preset.name} is a {actual} model")


def _text(args, p, model_dir, llava: bool = False):
    """``(text, negative, prompts)``: embeddings now, or the prompts for the model directory's encoders."""
    from hcjax.convert.text_encoder_dir import has_llava_image_path, has_text_encoders
    from hcjax.models.text.templates import DEFAULT_NEGATIVE
    from hcjax.pipelines import text_inputs

    if args.text_embeds:
        try:
            text, negative = text_inputs.load(args.text_embeds)
        except ValueError as e:
            raise UsageError(str(e).replace("\n", " ")) from None
        return text, negative, None
    if args.prompt is None:
        raise UsageError("give --prompt TEXT (or --text-embeds FILE)")
    if p.text_encoder == "demo":
        from hcjax.demo.text import DemoTextEncoder

        encoder = DemoTextEncoder()
        unknown = encoder.unknown(args.prompt)
        if unknown:
            print(f"note: the demo model never saw the words {', '.join(unknown)}; it knows "
                  f"{', '.join(encoder.vocab[2:])}")
        return encoder.encode([args.prompt]), encoder.encode([args.negative_prompt or ""]), None
    if model_dir is not None and has_text_encoders(model_dir):
        if (p.image_to_video or llava) and not has_llava_image_path(model_dir):
            raise UsageError("this model encodes the prompt together with the image through LLaVA, and "
                             "this model directory has no LLaVA image path: convert the text encoders again from "
                             "the LLaVA folder (tools/convert_text_encoders.py --llm LLAVA_DIR), or pass "
                             "--text-embeds FILE")
        return None, None, (args.prompt, DEFAULT_NEGATIVE if args.negative_prompt is None else args.negative_prompt)
    if model_dir is not None or not is_small(p):
        raise UsageError("this model directory has no text encoders: add them with tools/convert_text_encoders.py, "
                         "or pass --text-embeds FILE (.safetensors / .npz with text_states, text_mask, text_pooled)")
    d = p.dit
    return (text_inputs.placeholder(args.prompt, d.text_dim, d.pooled_dim),
            text_inputs.placeholder(args.negative_prompt or "", d.text_dim, d.pooled_dim), None)


def _image(args, p):
    """The first frame in [-1, 1] at the bucket size, the ``(height, width)`` it implies, and the image as read."""
    from hcjax.io import MediaError, image_to_unit_range, read_image
    from hcjax.pipelines import buckets

    if args.image is None:
        if p.image_to_video:
            raise UsageError(f"{p.name} is an image-to-video model: give --image PATH")
        return None, None, None
    if not p.image_to_video:
        raise UsageError(f"{p.name} is a text-to-video model; --image needs an I2V model (e.g. hunyuan-video-i2v)")
    try:
        pixels = read_image(args.image)
    except MediaError as e:
        raise UsageError(str(e)) from None
    if args.height is not None and args.width is not None:
        size = (args.height, args.width)
    elif args.height is not None or args.width is not None:
        raise UsageError("give both --height and --width, or neither (the bucket of --resolution is used)")
    elif args.resolution is not None or not is_small(p):
        size = buckets.i2v_bucket(*pixels.shape[:2], args.resolution or "720p")
    else:
        size = (p.sampler.height, p.sampler.width)
    if size[0] % 16 or size[1] % 16:
        return None, size, pixels   # reported with the other size problems
    fitted = buckets.i2v_image(pixels, *size, fit=args.image_fit)
    return image_to_unit_range(fitted), size, pixels


def prepare(args: argparse.Namespace) -> Plan:
    """Every check, no heavy work: raises ``UsageError`` naming the fix."""
    from hcjax.pipelines import SampleRequest, hunyuan_video

    out = output_path(args.out, ".mp4")
    sheet = args.sheet or os.path.splitext(out)[0] + ".png"
    output_path(sheet, ".png")
    p, model_dir = resolve_model(args.model)
    check_task(args.task, p)
    if model_dir is None and not is_small(p):
        raise UsageError(f"preset {p.name!r} is full size: random weights are for small presets (e.g. tiny); "
                         "convert a checkpoint with `hcjax convert` and pass its directory")
    if model_dir is not None:
        from hcjax import convert

        missing = {"dit", "vae"} - set(convert.read_model_info(model_dir)["parts"])
        if missing:
            flags = " and ".join({"dit": "--src (the DiT)", "vae": "--vae-src (the VAE)"}[m] for m in sorted(missing))
            raise UsageError(f"model directory {model_dir!r} lacks {', '.join(sorted(missing))}; convert again "
                             f"with {flags}")
    if sample_humo.is_humo(p):
        humo, request, text, negative = sample_humo.prepare_humo(args, p, model_dir)
        return Plan(p, model_dir, request, text, negative, None, None, out, sheet, p.sampler.fps,
                    not args.no_progress, args.seed, humo=humo)
    sample_humo.refuse_humo_flags(args, p)
    if sample_avatar.is_avatar(p):
        avatar, request, text, negative = sample_avatar.prepare_avatar(args, p, model_dir)
        return Plan(p, model_dir, request, text, negative, None, None, out, sheet, p.sampler.fps,
                    not args.no_progress, args.seed, avatar=avatar)
    sample_avatar.refuse_avatar_flags(args, p)
    custom, frames = None, args.frames
    if sample_custom.is_custom(p):
        custom = sample_custom.prepare_custom(args, p, model_dir)
        frames = custom.frames or frames
    else:
        sample_custom.refuse_custom_flags(args, p)
    image, size, raw_image = _image(args, p)
    height, width = size or (custom and custom.size) or (args.height, args.width)
    try:
        request = SampleRequest.defaults(p, frames=frames, height=height, width=width, steps=args.steps,
                                         shift=args.shift, seed=args.seed, embedded_guidance=args.guidance,
                                         cfg_scale=args.cfg_scale)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if custom is not None:
        sample_custom.check_audio_covers(custom, request.frames)
    text, negative, prompts = _text(args, p, model_dir, llava=custom is not None)
    try:
        hunyuan_video.check(p, request, text, negative, image)
    except ValueError as e:
        raise UsageError("; ".join(line.strip() for line in str(e).splitlines()[1:])) from None
    return Plan(p, model_dir, request, text, negative, image, prompts, out, sheet, args.fps or p.sampler.fps,
                not args.no_progress, args.seed, raw_image, custom)


def execute(plan: Plan) -> None:
    from hcjax import convert
    from hcjax.io import contact_sheet, write_mp4, write_png
    from hcjax.models import random_params
    from hcjax.pipelines import generate

    if plan.model_dir is None:
        dit_params, vae_params = random_params(plan.preset.dit, plan.seed), random_params(plan.preset.vae, plan.seed)
    else:
        try:
            _, dit_params, vae_params = convert.load_model_dir(plan.model_dir)
        except convert.ModelDirError as e:
            raise UsageError(" ".join(str(e).split())) from None
    mask = None
    if plan.humo is not None:
        result, mask = sample_humo.execute_humo(plan.humo, plan, dit_params, vae_params)
    elif plan.avatar is not None:
        result = sample_avatar.execute_avatar(plan.avatar, plan, dit_params, vae_params)
    elif plan.custom is not None:
        result = sample_custom.execute_custom(plan.custom, plan, dit_params, vae_params)
    else:
        text, negative = plan.text, plan.negative
        if plan.prompts is not None:
            from hcjax.convert.text_encoder_dir import load_text_encoders

            text, negative = _encode(plan, load_text_encoders(plan.model_dir))
        result = generate(plan.preset, dit_params, vae_params, text, plan.request, negative=negative,
                          image=plan.image, progress=plan.progress)
    write_mp4(plan.out, result.video[0], fps=plan.fps)
    written = [plan.out]
    try:
        write_png(plan.sheet, contact_sheet(result.video[0]))
        written.append(plan.sheet)
        if mask is not None:
            sample_humo.write_face_mask(plan.humo, mask, plan.preset.vae.spatial_ratio)
            written.append(plan.humo.mask_out)
    except BaseException:
        for path in written:
            os.remove(path)
        raise
    r = plan.request
    print(f"wrote {plan.out} ({result.video.shape[1]} frames {r.height}x{r.width} at {plan.fps:g} fps) and "
          f"{' and '.join(written[1:])}")
    print(f"{plan.preset.name}: {r.steps} steps, shift {r.shift}, seed {r.seed}; {result.timings.report()}")


def _encode(plan: Plan, encoders):
    """``(text, negative)`` embeddings of the prompts: text only (T2V), or with the image through LLaVA (I2V;
    the negative branch as diffusers runs it: a black image, interleave 2)."""
    prompt, negative_prompt = plan.prompts
    r = plan.request
    if not plan.preset.image_to_video:
        return (encoders.encode([prompt], r.frames),
                encoders.encode([negative_prompt], r.frames) if r.uses_cfg else None)
    from hcjax.convert.text_encoder_dir import load_llava_image_path
    from hcjax.pipelines import i2v_text

    image_path = load_llava_image_path(plan.model_dir)
    text = i2v_text.i2v_embeddings(encoders, image_path, [prompt], plan.llava_image)
    negative = (i2v_text.i2v_embeddings(encoders, image_path, [negative_prompt], i2v_text.black_image(r.height, r.width),
                                        interleave=2) if r.uses_cfg else None)
    return text, negative


def run(args: argparse.Namespace) -> None:
    execute(prepare(args))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", help=f"{', '.join(TASKS)}: checked against the model (default: the model's task)")
    p.add_argument("--prompt", help="text (random-weight presets: a deterministic stand-in embedding)")
    p.add_argument("--negative-prompt", help="for CFG (default with text encoders: the official negative prompt)")
    p.add_argument("--text-embeds", help=".safetensors / .npz with text_states, text_mask, text_pooled "
                                         "(and negative_* for CFG)")
    p.add_argument("--image", help="first frame (image-to-video models)")
    p.add_argument("--resolution", choices=["360p", "540p", "720p"], help="I2V bucket from the image's aspect")
    p.add_argument("--image-fit", choices=["official", "cover"], default="official",
                   help="I2V resize rule: the official transform, or a plain cover-and-crop")
    p.add_argument("--frames", type=int, help="4k+1 (default: the preset's)")
    p.add_argument("--height", type=int, help="multiple of 16")
    p.add_argument("--width", type=int, help="multiple of 16")
    p.add_argument("--steps", type=int)
    p.add_argument("--shift", type=float, help="flow shift")
    p.add_argument("--guidance", type=float, help="embedded guidance scale (distilled models; official 6.0)")
    p.add_argument("--cfg-scale", type=float, help="classic CFG scale (1 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float)
    p.add_argument("--sheet", help="contact sheet PNG (default: next to --out)")
    p.add_argument("--no-progress", action="store_true")
    sample_custom.add_arguments(p)
    sample_avatar.add_arguments(p)
    sample_humo.add_arguments(p)


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="sample a video (MP4 + PNG contact sheet)")
    p.add_argument("--model", required=True, help="preset name (random weights) or `hcjax convert` directory")
    p.add_argument("--out", required=True, help="output .mp4")
    add_arguments(p)
    p.set_defaults(func=run)
