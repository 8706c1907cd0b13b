"""The demo model's training path on a CPU at smoke size: VAE training through ``hcjax train``, the dataset tool,
DiT training from the VAE export, batched sampling, the evaluation's scoring."""

import json
import subprocess
import sys
from pathlib import Path

import chex
import numpy as np
import pytest

from hcjax import configs
from hcjax.cli import main as cli_main
from hcjax.convert.model_dir import load_model_dir, read_model_info
from hcjax.training.data import check_dataset, open_dataset

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "experiments/configs/demo.py")


SMALL = ["--config.data.crop_size=32", "--config.data.procedural_records=8", "--config.train.progress=False",
         "--config.train.log_every=1"]


@pytest.fixture(scope="module")
def vae_export(tmp_path_factory):
    """The demo's two VAE stages at smoke size: single frames, then clips from the first stage's export."""
    images = tmp_path_factory.mktemp("demo-vae-images")
    assert cli_main(["train", "--config", f"{CONFIG}:vae_images", f"--config.train.workdir={images}",
                     "--config.train.steps=2", "--config.train.global_batch=2", *SMALL]) == 0
    work = tmp_path_factory.mktemp("demo-vae")
    assert cli_main(["train", "--config", f"{CONFIG}:vae", f"--config.train.workdir={work}",
                     f"--config.model.init_from={images / 'export'}", "--config.train.steps=3",
                     "--config.train.global_batch=2", *SMALL]) == 0
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and r["l1"] > 0 and r["kl"] > 0 for r in records)
    return work / "export"


def test_vae_run_exports_the_vae(vae_export):
    info = read_model_info(vae_export)
    assert info["preset"] == "demo" and info["parts"] == ["vae"]


def test_vae_run_needs_pixel_clips(capsys):
    assert cli_main(["train", "--config", f"{CONFIG}:vae_images", "--config.data.source=synthetic"]) == 2
    assert "data.source=procedural" in capsys.readouterr().err


def test_vae_clip_stage_needs_the_image_stage(tmp_path, capsys):
    missing = tmp_path / "no-export"
    assert cli_main(["train", "--config", f"{CONFIG}:vae", f"--config.model.init_from={missing}"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_dataset_tool_and_dit_run(vae_export, tmp_path):
    data = tmp_path / "data"
    run = subprocess.run([sys.executable, str(ROOT / "tools/demo_data.py"), "--vae", str(vae_export), "--out",
                          str(data), "--clips", "16", "--media", str(tmp_path / "media"), "--media-count", "2"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert sorted(p.suffix for p in (tmp_path / "media").iterdir()) == [".mp4", ".mp4", ".png", ".png", ".txt",
                                                                        ".txt", ".wav", ".wav"]
    source = open_dataset(data)
    preset = configs.get("demo")
    check_dataset(source, preset.dit)
    record = source[3]
    chex.assert_shape(record["latents"], (5, 16, 16, 8))
    chex.assert_shape(record["ref_latents"], (1, 16, 16, 8))
    assert "moving" in record["caption"] and record["text_mask"].sum() >= 9
    again = subprocess.run([sys.executable, str(ROOT / "tools/demo_data.py"), "--vae", str(vae_export), "--out",
                            str(data)], capture_output=True, text=True)
    assert again.returncode != 0 and "exists already" in again.stderr

    work = tmp_path / "dit"
    assert cli_main(["train", "--config", f"{CONFIG}:dit", f"--config.train.workdir={work}",
                     f"--config.model.init_from={vae_export}", f"--config.data.path={data}",
                     "--config.train.steps=2", "--config.train.global_batch=4", "--config.train.progress=False",
                     "--config.train.log_every=1"]) == 0
    _, dit, vae = load_model_dir(work / "export")
    _, _, vae0 = load_model_dir(vae_export, parts=("vae",))
    chex.assert_trees_all_equal(vae, vae0)   # the DiT run carries its VAE along

    from hcjax.demo import measure, pipeline, world
    from hcjax.pipelines import SampleRequest

    scenes = world.scenes("held_out", 2, 0)
    request = SampleRequest.defaults(preset, steps=2)
    videos = pipeline.generate(preset, dit, vae, [world.caption(s) for s in scenes],
                               np.stack([world.render_reference(s) for s in scenes]), request)
    chex.assert_shape(videos, (2, world.FRAMES, world.SIZE, world.SIZE, 3))
    assert videos.dtype == np.uint8
    scores = measure.score(videos, scenes)
    assert set(scores) == set(measure.METRICS) and all(0 <= v <= 1 for v in scores.values())


def test_vae_kl_is_weighed_per_pixel_like_the_latent_diffusion_sum():
    """The report's KL weight 1e-6 is relative to reconstruction summed over pixels: with the loss read per pixel,
    the KL term is the per-sample KL sum divided by the pixels of a sample, and the batch is an average."""
    import jax
    import jax.numpy as jnp

    from hcjax.models.params import init_params
    from hcjax.models.vae import CausalVAE
    from hcjax.training.vae_step import VAELoss, vae_losses

    cfg = configs.get("demo").vae
    vae, params = CausalVAE(cfg), init_params(cfg, 0)
    video = jax.random.uniform(jax.random.key(1), (1, 5, 16, 16, 3), minval=-1.0, maxval=1.0)
    key = jax.random.key(2)
    base, m = vae_losses(vae, params, video, key, VAELoss(kl=0.0))
    weighted, _ = vae_losses(vae, params, video, key, VAELoss(kl=1.0))
    post = vae.apply({"params": params}, video, method=CausalVAE.encode_distribution)
    kl_sum = 0.5 * jnp.sum(post.mean ** 2 + jnp.exp(post.logvar) - 1.0 - post.logvar)
    np.testing.assert_allclose(m["kl"], kl_sum, rtol=1e-5)
    np.testing.assert_allclose(weighted - base, kl_sum / video[0].size, rtol=1e-4)
    twice, _ = vae_losses(vae, params, jnp.concatenate([video, video]), key, VAELoss(kl=1.0))
    assert abs(float(twice) - float(weighted)) < 0.05 * float(weighted)   # an average over the batch, not a sum


def test_eval_scores_a_vae_alone(vae_export, capsys):
    """``tools/eval_demo.py`` on the VAE run's export: ground truth and the renders through the VAE, no DiT rows."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("eval_demo", ROOT / "tools/eval_demo.py")
    eval_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_demo)
    assert eval_demo.main(["--model", str(vae_export), "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "| ground truth (renders) | 100.0% | 100.0% |" in out and "| renders through the VAE |" in out
    assert "trained" not in out and "targets" not in out
