"""hcjax (jit) vs diffusers (eager) DiT forward on the same CPU, interleaved, median of N runs.

Config: hidden 512 / 4 heads (head dim 128) / 2 double / 4 single blocks, latent 9x32x32 (2,304 video tokens),
64 text tokens. Prints both medians and the time ratio hcjax / diffusers (lower is better; target <= 1.0), then
the same for one attention call at the model's shape (hcjax's entry point against PyTorch's SDPA), the part of
the forward where XLA's CPU code has the least room.

    python tools/bench_dit_cpu.py [--runs 5] [--impl xla]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import torch

from hcjax import configs, convert
from hcjax.models import HunyuanVideoDiT
from hcjax.nn.attention import attention_head_major
from side_by_side import first_runs, interleaved_times, rel_l2, report


def build(latent=(9, 32, 32), text_len=64, seed=0):
    from diffusers import HunyuanVideoTransformer3DModel

    cfg = configs.DiTConfig(hidden_size=512, num_heads=4, depth_double=2, depth_single=4, dtype="float32",
                            param_dtype="float32")
    torch.manual_seed(seed)
    ref = HunyuanVideoTransformer3DModel(
        num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim, num_layers=cfg.depth_double,
        num_single_layers=cfg.depth_single).eval()
    params = convert.dit_from_torch(ref.state_dict(), cfg, source="diffusers")
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, cfg.in_channels, *latent, generator=g)
    inputs = dict(
        x=x, t=torch.tensor([500.0]), txt=torch.randn(1, text_len, cfg.text_dim, generator=g),
        mask=torch.ones(1, text_len, dtype=torch.int64), pooled=torch.randn(1, cfg.pooled_dim, generator=g),
        guidance=torch.tensor([6016.0]))
    return cfg, ref, params, inputs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--impl", default="auto", help="hcjax attention impl")
    args = parser.parse_args()

    cfg, ref, params, inp = build()
    cfg = cfg.replace(attention_impl=args.impl)
    fn = jax.jit(HunyuanVideoDiT(cfg).apply)
    jax_args = ({"params": params}, inp["x"].permute(0, 2, 3, 4, 1).numpy(), inp["t"].numpy(), inp["txt"].numpy(),
                inp["mask"].numpy(), inp["pooled"].numpy(), inp["guidance"].numpy())
    jax_args = jax.device_put(jax_args)

    def run_jax():
        return fn(*jax_args).block_until_ready()

    def run_torch():
        with torch.inference_mode():
            return ref(inp["x"], inp["t"], inp["txt"], inp["mask"], inp["pooled"], inp["guidance"],
                       return_dict=False)[0]

    out_jax, out_torch, compile_s = first_runs(run_jax, lambda: run_torch().permute(0, 2, 3, 4, 1))
    err = rel_l2(out_jax, out_torch)
    times = interleaved_times(args.runs, hcjax=run_jax, diffusers=run_torch)
    tokens = int(np.prod(inp["x"].shape[2:])) // 4 + inp["txt"].shape[1]
    print(f"config: hidden {cfg.hidden_size}, heads {cfg.num_heads}, blocks {cfg.depth_double}+{cfg.depth_single}, "
          f"tokens {tokens}; torch threads {torch.get_num_threads()}, jax {jax.__version__} on {jax.devices()[0]}")
    print(f"hcjax compile+first run {compile_s:.2f} s; outputs agree to rel L2 {err:.2e}")
    report(times)
    attention_side_by_side(args.runs, (1, cfg.num_heads, tokens, cfg.head_dim), args.impl)


def attention_side_by_side(runs: int, shape: tuple[int, int, int, int], impl: str) -> None:
    """One head-major self-attention call of ``shape``: hcjax (jit) against ``scaled_dot_product_attention``."""
    q, k, v = (torch.randn(*shape, generator=torch.Generator().manual_seed(i)) for i in range(3))
    fn = jax.jit(lambda *a: attention_head_major(*a, impl=impl))
    jax_qkv = jax.device_put(tuple(x.numpy() for x in (q, k, v)))

    def run_jax():
        return fn(*jax_qkv).block_until_ready()

    def run_torch():
        with torch.inference_mode():
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    out_jax, out_torch, _ = first_runs(run_jax, run_torch)
    err = rel_l2(out_jax, out_torch)
    print(f"attention alone, [B, H, L, D] = {list(shape)}; outputs agree to rel L2 {err:.2e}")
    report(interleaved_times(runs, hcjax=run_jax, sdpa=run_torch), theirs="sdpa")


if __name__ == "__main__":
    main()
