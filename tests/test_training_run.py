"""``hcjax train`` end to end on the tiny T2V config (synthetic data, CPU): the loss falls by more than half in
300 steps; a run killed with SIGKILL between checkpoints and started again reaches, step for step, the same
losses as the uninterrupted run (bit-identical); bad configs, data and checkpoints stop before training."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hcjax.training import loop, run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "configs", "t2v.py")
QUIET = ["--config.train.progress=false", "--config.train.tensorboard=false"]


def _command(workdir, *extra):
    return [sys.executable, "-m", "hcjax.cli", "train", "--config", f"{CONFIG}:tiny",
            f"--config.train.workdir={workdir}", "--config.train.log_every=1", "--config.train.checkpoint_every=50",
            "--config.train.export=false", *QUIET, *extra]


def _losses(workdir) -> dict[int, float]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("whole")
    proc = subprocess.run(_command(workdir), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def test_tiny_t2v_loss_halves(uninterrupted):
    losses = _losses(uninterrupted)
    assert sorted(losses) == list(range(1, 301))
    first = sum(losses[s] for s in range(1, 11)) / 10
    last = sum(losses[s] for s in range(291, 301)) / 10
    assert last < 0.5 * first, (first, last)


def test_killed_run_resumes_to_the_same_losses(uninterrupted, tmp_path):
    proc = subprocess.Popen(_command(tmp_path), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics, killed_at = tmp_path / "metrics.jsonl", None
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()] if metrics.exists() else []
        if steps and 60 <= steps[-1] <= 240 and steps[-1] % 50:    # past a checkpoint, before the next one
            proc.send_signal(signal.SIGKILL)
            killed_at = steps[-1]
            break
        time.sleep(0.005)
    proc.wait()
    assert killed_at is not None, "the run ended before it could be killed mid-way"
    resumed = subprocess.run(_command(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _losses(tmp_path) == _losses(uninterrupted)     # every step, exactly


def _cli_error(capsys, *args) -> str:
    from hcjax.cli import main

    assert main(["train", "--config", f"{CONFIG}:tiny", *QUIET, *args]) == 2
    return capsys.readouterr().err


def test_unknown_config_key(capsys, tmp_path):
    err = _cli_error(capsys, "--config.optim.learnig_rate=1e-4", f"--config.train.workdir={tmp_path}")
    assert "optim has no key 'learnig_rate'" in err and "learning_rate" in err
    assert not list(tmp_path.iterdir())


def test_bad_override_value_and_variant(tmp_path):
    with pytest.raises(run_config.ConfigError, match="train.steps: cannot read 'many' as a int"):
        run_config.apply_overrides(run_config.load(f"{CONFIG}:tiny"), ["config.train.steps=many"])
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        run_config.load(f"{CONFIG}:huge")


def test_wrong_shaped_record_stops_before_training(tmp_path):
    from hcjax.training.data_spec import DataSpec
    from hcjax.training.tfds_builder import write_dataset

    good = {"latents": np.zeros((2, 4, 6, 16), np.float32), "text_states": np.zeros((8, 32), np.float32),
            "text_mask": np.ones((8,), np.int32), "text_pooled": np.zeros((16,), np.float32), "caption": "ok"}
    bad = dict(good, latents=np.zeros((2, 5, 6, 16), np.float32))     # height 5: not a multiple of the patch
    write_dataset(tmp_path / "data", [good, good, good, good, bad], DataSpec(16, 8, 32, 16))
    config = run_config.apply_overrides(run_config.load(f"{CONFIG}:tiny"), [
        "config.data.source=tfds", f"config.data.path={tmp_path / 'data'}", f"config.train.workdir={tmp_path / 'w'}"])
    with pytest.raises(ValueError, match=r"\(2, 5, 6\)") as e:
        loop.build(config)
    assert "patch" in str(e.value) and "Fix:" in str(e.value), e.value
    assert not (tmp_path / "w").exists()


def test_resume_from_another_models_checkpoint(uninterrupted, capsys):
    # the tiny run's checkpoints, resumed by a wider model
    err = _cli_error(capsys, f"--config.train.workdir={uninterrupted}", "--config.train.steps=400",
                     "--config.model.depth_single=3")
    assert "checkpoint" in err and "single_blocks" in err, err
    assert max(_losses(uninterrupted)) == 300       # nothing trained, nothing logged
