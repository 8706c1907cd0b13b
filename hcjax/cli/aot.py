"""``hcjax aot``: compile the train step (or one sampling step) of a preset for a TPU topology on this host and
report per-chip memory, FLOPs and compile time. ``libtpu`` is found in ``TPU_LIBRARY_PATH``, the environment's
``tpu-aot`` folder (``make setup``) or an installed ``libtpu`` package; the compile runs in a child process
set up for it."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from hcjax.cli.common import UsageError

_CHILD = "HCJAX_AOT_CHILD"


def libtpu_path() -> str | None:
    if os.environ.get("TPU_LIBRARY_PATH"):
        return os.environ["TPU_LIBRARY_PATH"]
    bundled = Path(sys.prefix) / "tpu-aot" / "libtpu" / "libtpu.so"
    if bundled.is_file():
        return str(bundled)
    spec = importlib.util.find_spec("libtpu")
    if spec is not None and spec.origin:
        found = Path(spec.origin).parent / "libtpu.so"
        return str(found) if found.is_file() else None
    return None


def _plan(args: argparse.Namespace):
    from hcjax import configs
    from hcjax.training.aot import AotPlan

    configs.get(args.model)
    height, width, frames = (int(x) for x in args.size.split("x"))
    fields = {f.name for f in dataclasses.fields(AotPlan)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return AotPlan(**(given | dict(height=height, width=width, frames=frames))).resolved()


def run(args: argparse.Namespace) -> None:
    try:
        plan = _plan(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if os.environ.get(_CHILD) != "1":
        lib = libtpu_path()
        if lib is None:
            raise UsageError("libtpu not found; run `make setup` (puts it under .venv/tpu-aot), or "
                             "`pip install hcjax[tpu-aot]`, or set TPU_LIBRARY_PATH")
        env = dict(os.environ, **{_CHILD: "1"}, JAX_PLATFORMS="cpu", TPU_LIBRARY_PATH=lib,
                   ALLOW_MULTIPLE_LIBTPU_LOAD="1", TPU_WORKER_HOSTNAMES="localhost", TPU_SKIP_MDS_QUERY="1")
        env.pop("XLA_FLAGS", None)
        code = subprocess.call([sys.executable, "-m", "hcjax.cli", *args.argv], env=env)
        if code:
            raise SystemExit(code)
        return
    from hcjax.training.aot import compile_plan

    print(compile_plan(plan).text(), flush=True)


def add_parser(sub) -> None:
    p = sub.add_parser("aot", help="ahead-of-time compile for a TPU topology: per-chip memory, FLOPs, compile time")
    p.add_argument("--model", default="hunyuan-video-t2v", help="preset")
    p.add_argument("--task", choices=("train", "sample"), default="train",
                   help="train: one optimizer step; sample: one DiT forward in bf16 (one sampling step)")
    p.add_argument("--topology", default="v5p-64", help="slice name (v5p-64, v5p-128, ...) or v5p:AxBxC")
    p.add_argument("--size", default="720x1280x129", help="HEIGHTxWIDTHxFRAMES of the video")
    p.add_argument("--ref-frames", dest="ref_frames", type=int,
                   help="reference subjects (one latent frame of tokens each, HunyuanCustom's identity input); "
                        "default 1 for presets with identity references, else 0")
    p.add_argument("--text-len", dest="text_len", type=int,
                   help="text tokens; default the model's: 256, or 256 + 575 per reference subject for "
                        "HunyuanCustom (831)")
    p.add_argument("--batch-per-group", dest="batch_per_group", type=int,
                   help="samples per data-parallel group (data x fsdp); default 1")
    p.add_argument("--cfg-batch", dest="cfg_batch", action=argparse.BooleanOptionalAction,
                   help="sample task: one step is a forward of [uncond, cond] (batch doubled); default on for "
                        "presets that sample with classic CFG (HunyuanCustom), off otherwise")
    defaults = {"data": "1", "fsdp": "the chips left over", "tensor": "1", "sequence": "8"}
    for axis, default in defaults.items():
        p.add_argument(f"--{axis}", type=int, help=f"mesh {axis} degree (default {default})")
    p.add_argument("--sequence-parallel", dest="sequence_parallel", choices=("none", "ulysses", "ring"))
    p.add_argument("--attention", choices=("auto", "xla", "splash"))
    p.add_argument("--remat", choices=("none", "full", "save_dots", "offload"))
    p.add_argument("--depth-double", dest="depth_double", type=int,
                   help="fewer double blocks (quick checks); the audio adapter keeps the hooks after the blocks "
                        "that remain (1, 3, ... below this)")
    p.add_argument("--depth-single", dest="depth_single", type=int, help="fewer single blocks (quick checks)")
    p.set_defaults(func=run, argv=[])
