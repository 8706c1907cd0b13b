"""A real multi-host run: two processes joined by ``jax.distributed`` (CPU collectives over gloo), two CPU devices
each, train the tiny T2V model with the batch and the params sharded over all four devices; they checkpoint, stop,
resume from the checkpoint (each process its own data-iterator state) and export the params together, starting
from a model directory each process reads. Losses and exported params match one process with four devices, and
the export (sharded over four devices) loads in this one-device process."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from hcjax import configs
from hcjax.convert.model_dir import load_model_dir, save_model_dir
from hcjax.models import random_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "configs", "t2v.py")
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"   # test speed only
STEPS, FIRST = 16, 8


def _cmd(workdir, steps, *extra):
    return [sys.executable, "-m", "hcjax.cli", "train", "--config", f"{CONFIG}:tiny", "--config.train.progress=false",
            "--config.train.tensorboard=false", f"--config.train.workdir={workdir}", f"--config.train.steps={steps}",
            "--config.train.log_every=1", f"--config.train.checkpoint_every={FIRST}", *extra]


def _env(devices):
    return dict(os.environ, JAX_PLATFORMS="cpu",
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_processes(workdir, steps, *extra):
    port = _free_port()
    procs = [subprocess.Popen(_cmd(workdir, steps, *extra, "--config.train.distributed=true",
                                   f"--config.train.coordinator=localhost:{port}", "--config.train.num_processes=2",
                                   f"--config.train.process_id={i}"),
                              cwd=ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both runs fine-tune the same model directory (read by every process; its VAE goes into the exports)."""
    one, two, base = (tmp_path_factory.mktemp(n) for n in ("one", "two", "base"))
    tiny = configs.get("tiny")
    save_model_dir(base / "model", "tiny", random_params(tiny.dit, 1), random_params(tiny.vae, 2))
    init = f"--config.model.init_from={base / 'model'}"
    proc = subprocess.run(_cmd(one / "w", STEPS, init), cwd=ROOT, env=_env(4), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = _two_processes(two / "w", FIRST, init)       # stops after the checkpoint of step FIRST ...
    assert all("fsdp': 4" in out for out in first), first
    checkpoint = (two / "w" / "checkpoints" / str(FIRST) / "data" / "metadata").read_text()
    second = _two_processes(two / "w", STEPS, init)      # ... and resumes from it
    return one / "w", two / "w", json.loads(checkpoint), second, base / "model"


def _losses(workdir) -> np.ndarray:
    return np.array([r["loss"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())])


def test_two_processes_train_like_one(runs):
    one, two, _, _, _ = runs
    a, b = _losses(one), _losses(two)
    assert a.shape == b.shape == (STEPS,)
    np.testing.assert_allclose(b, a, rtol=1e-5)    # gloo's reductions may add in another order: not bit-identical
    assert a[-4:].mean() < 0.9 * a[:4].mean()       # and it is training


def test_the_resume_restores_each_process_data_state(runs):
    _, _, checkpoint, second, _ = runs
    assert checkpoint["process_count"] == 2 and len(checkpoint["states"]) == 2
    # each process saved its own state; they agree, since a state counts global batches (rows are per host)
    assert [s["next_batch"] for s in checkpoint["states"]] == [FIRST, FIRST]
    assert checkpoint["states"][0] == checkpoint["states"][1]
    assert f"resuming from the checkpoint of step {FIRST}" in second[0], second     # process 0 logs


def test_two_processes_export_the_same_params(runs):
    one, two, _, _, base = runs
    assert sorted(p.name for p in two.iterdir()) == ["checkpoints", "export", "metrics.jsonl"]   # no temporaries
    _, dit_a, vae_a = load_model_dir(one / "export")
    _, dit_b, vae_b = load_model_dir(two / "export")
    for a, b in zip(jax.tree.leaves(dit_a), jax.tree.leaves(dit_b)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
    _, dit_base, vae_base = load_model_dir(base)
    for a, b, c in zip(jax.tree.leaves(vae_a), jax.tree.leaves(vae_b), jax.tree.leaves(vae_base)):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(c))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    moved = [float(np.abs(np.asarray(b) - np.asarray(c)).max()) for b, c in zip(jax.tree.leaves(dit_b),
                                                                               jax.tree.leaves(dit_base))]
    assert max(moved) > 1e-3      # trained from the base model
    last = two / "checkpoints" / str(STEPS)
    assert json.loads((last / "model" / "metadata").read_text())["step"] == STEPS
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= {p.name for p in (last / "state").iterdir()}   # both wrote


def test_bad_process_settings_are_named(tmp_path, capsys):
    from hcjax.cli import main

    assert main(["train", "--config", f"{CONFIG}:tiny", "--config.train.distributed=true",
                 "--config.train.coordinator=localhost:1234", f"--config.train.workdir={tmp_path / 'w'}"]) == 2
    err = capsys.readouterr().err
    assert "train.num_processes 0, train.process_id -1: give all three" in err
    assert not (tmp_path / "w").exists()
