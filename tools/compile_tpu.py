"""Ahead-of-time compiles the 13B DiT for a TPU topology on a CPU machine (no TPU needed): the splash
attention path inside ``shard_map``, full-size widths, one double and one single block by default.

    TPU_LIBRARY_PATH=.venv/tpu-aot/libtpu/libtpu.so JAX_PLATFORMS=cpu \\
        python tools/compile_tpu.py --topology v5p:2x2x1 --size 544x960x129

``libtpu`` must match the installed jax (``make tpu-aot`` puts it under ``.venv/tpu-aot``). Prints the
compile time and the per-chip memory analysis; exits non-zero if compilation fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def compile_dit(topology: str, frames: int, height: int, width: int, double: int, single: int,
                tensor: int | None = None, text_len: int = 256):
    """The compiled forward of the DiT on ``topology`` (heads split over a ``tensor`` axis of all chips by
    default), params replicated, bf16. Returns ``(compiled, seconds)``."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import topologies
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from hcjax import configs
    from hcjax.models import HunyuanVideoDiT, abstract_params

    topo = topologies.get_topology_desc(platform="tpu", topology_name=topology)
    devices = np.asarray(topo.devices)
    tensor = tensor or devices.size
    mesh = jax.sharding.Mesh(devices.reshape(devices.size // tensor, tensor), ("data", "tensor"))
    cfg = dataclasses.replace(configs.get("hunyuan-video-t2v").dit, depth_double=double, depth_single=single,
                              attention_impl="splash")
    model = HunyuanVideoDiT(cfg)
    replicated = NamedSharding(mesh, P())
    abstract = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=replicated)  # noqa: E731
    params = jax.tree.map(lambda x: abstract(x.shape, x.dtype), abstract_params(cfg))
    latent = (1, (frames - 1) // 4 + 1, height // 8, width // 8, cfg.in_channels)
    args = (abstract(latent, jnp.bfloat16), abstract((1,), jnp.float32), abstract((1, text_len, cfg.text_dim),
            jnp.bfloat16), abstract((1, text_len), jnp.int32), abstract((1, cfg.pooled_dim), jnp.bfloat16),
            abstract((1,), jnp.float32))

    def forward(p, *a):
        return model.apply({"params": p}, *a)

    start = time.perf_counter()
    with jax.set_mesh(mesh):
        compiled = jax.jit(forward).lower(params, *args).compile()
    return compiled, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topology", default="v5p:2x2x1")
    parser.add_argument("--size", default="544x960x129", help="HEIGHTxWIDTHxFRAMES of the video")
    parser.add_argument("--double", type=int, default=1)
    parser.add_argument("--single", type=int, default=1)
    parser.add_argument("--tensor", type=int, help="chips per tensor group (default: all)")
    args = parser.parse_args()
    height, width, frames = (int(x) for x in args.size.split("x"))
    compiled, seconds = compile_dit(args.topology, frames, height, width, args.double, args.single, args.tensor)
    mem = compiled.memory_analysis()
    tokens = ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)
    print(f"compiled the DiT ({args.double} double + {args.single} single blocks, {tokens} image tokens) for "
          f"{args.topology} in {seconds:.1f} s")
    if mem is not None:
        gib = 2.0 ** 30
        print(f"per chip: arguments {mem.argument_size_in_bytes / gib:.2f} GiB, temporaries "
              f"{mem.temp_size_in_bytes / gib:.2f} GiB, output {mem.output_size_in_bytes / gib:.2f} GiB")
    print("splash kernels in the program:", compiled.as_text().count("splash") > 0)


if __name__ == "__main__":
    main()
