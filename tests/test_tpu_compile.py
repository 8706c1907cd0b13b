"""Ahead-of-time compilation of the 13B DiT (one double and one single block, full widths, bf16) for a TPU v5p
topology at 544x960x129 (67,320 image tokens), on this CPU machine, through the splash attention path inside
``shard_map``: ``tools/compile_tpu.py`` in a subprocess with ``libtpu`` (``make setup`` installs the version
matching jax under ``.venv/tpu-aot``; ``pip install .[tpu-aot]`` also works). Takes a few minutes."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _libtpu() -> str | None:
    bundled = os.path.join(ROOT, ".venv", "tpu-aot", "libtpu", "libtpu.so")
    if os.path.exists(bundled):
        return bundled
    spec = importlib.util.find_spec("libtpu")
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], "libtpu.so")
        return path if os.path.exists(path) else None
    return None


@pytest.mark.skipif(_libtpu() is None, reason="libtpu not installed (make setup, or pip install .[tpu-aot])")
def test_dit_compiles_for_tpu_v5p_with_splash():
    env = dict(os.environ, JAX_PLATFORMS="cpu", TPU_LIBRARY_PATH=_libtpu(), ALLOW_MULTIPLE_LIBTPU_LOAD="1",
               TPU_WORKER_HOSTNAMES="localhost", TPU_SKIP_MDS_QUERY="1")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "compile_tpu.py"), "--topology", "v5p:2x2x1",
                           "--size", "544x960x129"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "67320 image tokens" in proc.stdout and "for v5p:2x2x1" in proc.stdout
    assert "splash kernels in the program: True" in proc.stdout
