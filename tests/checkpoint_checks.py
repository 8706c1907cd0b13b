"""Checkpoint checks that need their own process; run by ``test_training_checkpoint.py``.

``sharded DIR``: on 8 simulated CPU devices, saves a state sharded fsdp-8 on axis 0 and restores it into other
shardings (a 4x2 mesh); prints one JSON line of results. ``killed DIR``: saves step 1, starts an asynchronous save
of step 2 and SIGKILLs itself at once (the parent then resumes from DIR)."""

import json
import os
import signal
import sys

if __name__ == "__main__":  # before JAX starts; imported by the tests, it changes nothing
    if sys.argv[1] == "sharded":
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hcjax.training.checkpoint import TrainCheckpointer  # noqa: E402


def state_of(step: int, size: int = 16) -> dict:
    params = {"w": jnp.arange(size * 8, dtype=jnp.float32).reshape(size, 8) * (step + 1),
              "b": {"bias": jnp.full((8,), step, jnp.float32)}}
    return {"step": jnp.int32(step), "params": params, "opt_state": optax.adamw(1e-3).init(params),
            "rng": jax.random.key_data(jax.random.key(step)), "key": jax.random.key(step + 7)}


def raw(x: jax.Array) -> np.ndarray:
    return np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)


def sharded(directory: str) -> None:
    devices = np.asarray(jax.devices())
    fsdp = jax.sharding.Mesh(devices, ("fsdp",))
    grid = jax.sharding.Mesh(devices.reshape(4, 2), ("data", "model"))

    def place(x, mesh, spec):
        return jax.device_put(x, NamedSharding(mesh, spec if np.ndim(x) >= 2 else P()))

    state = jax.tree.map(lambda x: place(x, fsdp, P("fsdp")), state_of(5))
    with TrainCheckpointer(directory) as ckpt:
        ckpt.save(5, state, force=True)
    targets = {"grid": P("data", "model"), "columns": P(None, ("data", "model")), "replicated": P()}
    out = {"saved_sharded": state["params"]["w"].sharding.spec == P("fsdp")}
    for name, spec in targets.items():
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=NamedSharding(grid, spec if x.ndim >= 2 else P())), state)
        with TrainCheckpointer(directory) as ckpt:
            got, step = ckpt.restore_latest(abstract)
        same = [raw(g).tobytes() == raw(w).tobytes() and g.dtype == w.dtype
                for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(state))]
        placed = [g.sharding == a.sharding for g, a in zip(jax.tree.leaves(got), jax.tree.leaves(abstract))]
        shapes = sorted({tuple(s.data.shape) for s in got["params"]["w"].addressable_shards})
        out[name] = {"step": step, "values": all(same), "shardings": all(placed), "leaves": len(same),
                     "shard_shape": shapes}
    print(json.dumps(out, default=str))


def killed(directory: str) -> None:
    ckpt = TrainCheckpointer(directory)
    ckpt.save(1, state_of(1, size=4096), force=True)
    ckpt.wait()
    ckpt.save(2, state_of(2, size=4096), force=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    {"sharded": sharded, "killed": killed}[sys.argv[1]](sys.argv[2])
