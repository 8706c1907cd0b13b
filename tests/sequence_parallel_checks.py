"""Sequence-parallel checks on 8 simulated CPU devices; run by ``test_sequence_parallel.py`` in a subprocess
(the device count must be set before JAX starts). Prints one JSON line ``{"check name": value}``: relative L2
errors against single-device attention / DiT, and the messages of the expected errors."""

import json
import os
import sys
import time

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import chex  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hcjax import configs  # noqa: E402
from hcjax.models import HunyuanVideoDiT, random_params  # noqa: E402
from hcjax.models.dit import text_segments  # noqa: E402
from hcjax.nn.attention import attention_head_major  # noqa: E402
from hcjax.parallel import make_mesh, sequence_parallel_attention  # noqa: E402
from hcjax.parallel.online_softmax import block_stats, chunked_block_stats, finish  # noqa: E402
from tests.jax_helpers import random_inputs  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

MESHES = {"seq2": dict(sequence=2), "seq4": dict(sequence=4), "data2_seq4": dict(data=2, sequence=4),
          "seq8": dict(sequence=8)}


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def mesh_of(name):
    spec = MESHES[name]
    n = int(np.prod(list(spec.values())))
    return make_mesh(**spec, devices=jax.devices()[:n])


def attention_inputs(num_img, heads=8, batch=2, txt=6, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((batch, heads, n, dim)).astype(np.float32) for n in (num_img,) * 3 + (txt,) * 3]
    mask = (np.arange(txt)[None] < np.asarray([txt, 3])[:, None]).astype(np.int32)
    return [jnp.asarray(a) for a in arrays], text_segments(jnp.asarray(mask), num_img)


def attention_checks(out, num_img=30):
    """Values and gradients of ``sequence_parallel_attention`` vs ``attention_head_major`` on the whole arrays
    (30 image tokens: padded to a multiple of 4 and 8)."""
    (iq, ik, iv, tq, tk, tv), seg = attention_inputs(num_img)
    args = (iq, tq, ik, tk, iv, tv)
    w = jax.random.normal(jax.random.key(1), (2, 8, num_img + 6, 16))

    def ref_loss(*x):
        q, k, v = (jnp.concatenate(x[i:i + 2], axis=2) for i in (0, 2, 4))
        o = attention_head_major(q, k, v, seg)
        return jnp.sum(o * w), o

    (_, ref), ref_grads = jax.jit(jax.value_and_grad(ref_loss, argnums=range(6), has_aux=True))(*args)
    for mode in ("ulysses", "ring"):
        def loss(iq, tq, ik, tk, iv, tv, mode=mode):
            io, to = sequence_parallel_attention(iq, ik, iv, tq, tk, tv, seg, mode=mode)
            chex.assert_shape(io, iq.shape)
            chex.assert_shape(to, tq.shape)
            o = jnp.concatenate([io, to], axis=2)
            return jnp.sum(o * w), o

        for mesh_name in ("seq2", "seq4", "seq8"):
            with jax.set_mesh(mesh_of(mesh_name)):
                (_, o), grads = jax.jit(jax.value_and_grad(loss, argnums=range(6), has_aux=True))(*args)
            key = f"attn_{mode}_{mesh_name}_img{num_img}"
            out[key] = rel(o, ref)
            out[key + "_grad"] = max(rel(g, r) for g, r in zip(grads, ref_grads))


def chunk_checks(out):
    """The ring's query-chunked block statistics equal one block, values and gradients."""
    (q, k, v, *_), seg = attention_inputs(30)
    s = seg[:, :30].at[:, 25:].set(1)

    def f(chunk):
        return lambda q, k, v: jnp.sum(finish(chunked_block_stats(q, k, v, s, s, chunk), q.dtype) ** 2)

    ref = jax.jit(jax.value_and_grad(lambda q, k, v: jnp.sum(finish(block_stats(q, k, v, s, s), q.dtype) ** 2),
                                     argnums=(0, 1, 2)))(q, k, v)
    got = jax.jit(jax.value_and_grad(f(7), argnums=(0, 1, 2)))(q, k, v)
    out["chunked_stats"] = abs(float(got[0] - ref[0])) / abs(float(ref[0]))
    out["chunked_stats_grad"] = max(rel(g, r) for g, r in zip(got[1], ref[1]))


def dit_checks(out):
    """The tiny DiT (4 heads, padded text) under each mode and mesh equals the plain forward."""
    cfg = configs.get("tiny").dit.replace(num_heads=4, rope_axes=(4, 6, 6))
    params = random_params(cfg, seed=0)
    # 18 image tokens (padded for 4 and 8 shards) or 16
    cases = [("ulysses", "seq2", (2, 4, 8)), ("ulysses", "data2_seq4", (3, 4, 6)), ("ring", "seq2", (3, 4, 6)),
             ("ring", "data2_seq4", (2, 4, 8)), ("ring", "seq8", (3, 4, 6))]
    refs = {}
    for thw in {c[2] for c in cases}:
        inputs = random_inputs(cfg, batch=2, latent_thw=thw, text_len=6, valid=(6, 3))
        refs[thw] = inputs, jax.jit(HunyuanVideoDiT(cfg).apply)({"params": params}, **inputs)
    rules = [("activation_batch", "data"), ("activation_length", "sequence")]
    for mode, mesh_name, thw in cases:
        inputs, ref = refs[thw]
        model = HunyuanVideoDiT(cfg.replace(sequence_parallel=mode))
        with jax.set_mesh(mesh_of(mesh_name)), nn.logical_axis_rules(rules):
            got = jax.jit(model.apply)({"params": params}, **inputs)
        chex.assert_shape(got, ref.shape)
        n_img = int(np.prod(thw)) // 4
        out[f"dit_{mode}_{mesh_name}_img{n_img}"] = rel(got, ref)
    try:
        with jax.set_mesh(mesh_of("seq8")):
            model = HunyuanVideoDiT(cfg.replace(sequence_parallel="ulysses"))
            jax.jit(model.apply)({"params": params}, **refs[(2, 4, 8)][0])
        out["error_bad_degree"] = "no error"
    except ValueError as e:
        out["error_bad_degree"] = str(e)
    try:
        cfg.replace(sequence_parallel="rings")
        out["error_bad_mode"] = "no error"
    except ValueError as e:
        out["error_bad_mode"] = str(e)


def kernel_checks(out):
    """A Pallas kernel (splash, interpreted) under a mesh: per device over data x tensor (``shard_map`` made by
    ``kernels.sharded.per_device``), and as the local attention of Ulysses (only ``sequence`` manual there,
    ``data`` still automatic), values and gradients against the plain XLA attention."""
    from hcjax.nn.kernels.splash_tpu import splash_attention

    (iq, ik, iv, tq, tk, tv), seg = attention_inputs(32, heads=4)
    q, k, v = (jnp.concatenate(p, axis=2) for p in ((iq, tq), (ik, tk), (iv, tv)))
    want = attention_head_major(q, k, v, seg, impl="xla")
    loss = lambda f: lambda *x: jnp.sum(f(*x) * want)  # noqa: E731
    want_grad = jax.grad(loss(lambda *x: attention_head_major(*x, seg, impl="xla")), argnums=(0, 1, 2))(q, k, v)
    with jax.set_mesh(make_mesh(data=2, tensor=2, devices=jax.devices()[:4])):
        kernel = jax.jit(lambda *x: splash_attention(*x, seg, interpret=True))
        out["kernel_per_device"] = rel(kernel(q, k, v), want)
        grads = jax.jit(jax.grad(loss(lambda *x: splash_attention(*x, seg, interpret=True)), argnums=(0, 1, 2)))(
            q, k, v)
        out["kernel_per_device_grad"] = max(rel(g, w) for g, w in zip(grads, want_grad))
    with jax.set_mesh(make_mesh(data=2, sequence=2, devices=jax.devices()[:4])):
        img, txt = jax.jit(lambda *x: sequence_parallel_attention(*x, seg, mode="ulysses", impl="splash"))(
            iq, ik, iv, tq, tk, tv)
        out["kernel_in_ulysses"] = rel(jnp.concatenate([img, txt], axis=2), want)


if __name__ == "__main__":
    assert len(jax.devices()) == 8, jax.devices()
    results = {}
    for check in (attention_checks, chunk_checks, dit_checks, kernel_checks):
        start = time.perf_counter()
        check(results)
        print(f"{check.__name__}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(json.dumps(results))
