"""``hcjax aot``: the train step of the 13B DiT (full widths, one double and one single block, bf16 compute,
fp32 master params and AdamW state, full remat) compiled ahead of time for a TPU v5p-8 slice (4 chips) on this
CPU machine, with Ulysses sequence parallelism over 4 chips and splash attention inside ``shard_map``. Needs
``libtpu`` (``make setup`` installs the version matching jax under ``.venv/tpu-aot``); takes a few minutes."""

import subprocess
import sys

import pytest

from hcjax.cli.aot import libtpu_path


def _aot(*args, timeout=1500):
    return subprocess.run([sys.executable, "-m", "hcjax.cli", "aot", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(libtpu_path() is None, reason="libtpu not installed (make setup, or pip install .[tpu-aot])")
def test_train_step_compiles_for_tpu_v5p_with_splash():
    proc = _aot("--task", "train", "--topology", "v5p-8", "--size", "256x256x33", "--depth-double", "1",
                "--depth-single", "1", "--sequence", "4")
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "2304 tokens per sample" in out and "v5p:2x2x1, 4 chips" in out and "mesh sequence=4" in out
    assert "splash attention kernels in the program: yes" in out
    assert "\nfits" in out


def test_bad_request_stops_before_compiling():
    proc = _aot("--size", "720x1280x130", timeout=120)
    assert proc.returncode == 2
    assert "frames 130 must be 4k+1" in proc.stderr
