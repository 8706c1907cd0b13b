"""The hcjax command and the configs: outputs, and one clear error per bad input."""

import dataclasses

import chex
import pytest

from hcjax import cli, configs


def test_presets():
    assert set(configs.names()) >= {"hunyuan-video-t2v", "tiny"}
    t2v = configs.get("hunyuan-video-t2v")
    assert t2v.dit == configs.DiTConfig() and t2v.vae == configs.VAEConfig()
    assert (t2v.dit.head_dim, t2v.dit.mlp_dim, t2v.dit.patch_volume) == (128, 12288, 4)
    with pytest.raises(ValueError, match="choose one of: hunyuan-video-t2v"):
        configs.get("hunyuan-video-13b")


@pytest.mark.parametrize("change, message", [
    (dict(rope_axes=(16, 56, 48)), "must sum to the head dim 128"),
    (dict(num_heads=7), "not divisible by num_heads"),
    (dict(remat_policy="some"), "remat_policy"),
    (dict(dtype="float17"), "unknown dtype"),
])
def test_config_validation(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(configs.DiTConfig(), **change)


def test_info_reports_the_full_model_without_memory(capsys):
    assert cli.main(["info", "--model", "hunyuan-video-t2v"]) == 0
    assert "12,821,012,544 params" in capsys.readouterr().out


def test_demo_draws_its_caption_with_the_bundled_model(tmp_path, capsys):
    """``hcjax demo`` as on a fresh checkout: the bundled weights sample the held-out "red star moving left", and
    the MP4, decoded back, shows a red subject moving left."""
    from hcjax.demo import measure
    from hcjax.io import read_video

    out = tmp_path / "demo.mp4"
    assert cli.main(["demo", "--out", str(out), "--no-progress"]) == 0
    assert (tmp_path / "demo.png").exists() and (tmp_path / "demo_reference.png").exists()
    text = capsys.readouterr().out
    assert "random weights" not in text and "17 frames 128x128" in text and str(out) in text
    assert "a red" in text and "star moving left" in text
    video = read_video(out)
    chex.assert_shape(video, (17, 128, 128, 3))
    masks = measure.subject_masks(video)
    assert measure.colour_of(video, masks) == "red" and measure.direction_of(masks) == "left"


@pytest.mark.parametrize("argv, message", [
    (["demo", "--frames", "8"], "not 4k+1"),
    (["demo", "--height", "40"], "multiple of 16"),
    (["demo", "--model", "hunyuan-video-t2v"], "full size"),
    (["info", "--model", "nope"], "unknown preset 'nope'"),
])
def test_bad_input_is_one_clear_error(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
