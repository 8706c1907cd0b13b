"""``hcjax sample`` / ``hcjax convert`` end to end on the tiny presets: playable MP4 and contact sheet, a
converted model directory, and one clear error per invalid input with no file left behind."""

import numpy as np
import pytest
from safetensors.torch import save_file

from hcjax import cli, configs
from hcjax.io import read_image, read_video, write_png
from hcjax.pipelines import TextEmbeddings, text_inputs
from tests.torch_reference import tiny_diffusers_dit, tiny_diffusers_vae


def _run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sample_writes_playable_mp4_and_contact_sheet(tmp_path, capsys):
    out = tmp_path / "fox.mp4"
    code, stdout, _ = _run(["sample", "--model", "tiny", "--prompt", "a fox", "--frames", "9", "--height", "48",
                            "--width", "80", "--steps", "3", "--out", str(out), "--no-progress"], capsys)
    assert code == 0, stdout
    video = read_video(out)
    assert video.shape == (9, 48, 80, 3) and video.std() > 5   # decodes, right size, not blank
    sheet = read_image(tmp_path / "fox.png")
    assert sheet.shape == (3 * 48 + 2 * 2, 3 * 80 + 2 * 2, 3)
    assert "compile" in stdout and "denoise" in stdout and "decode" in stdout


def test_image_to_video_from_an_image_file(tmp_path, capsys):
    image = np.zeros((120, 200, 3), np.uint8)
    image[30:90, 60:140] = (220, 40, 40)
    write_png(tmp_path / "first.png", image)
    out = tmp_path / "i2v.mp4"
    code, stdout, err = _run(["sample", "--model", "tiny-i2v", "--prompt", "it moves", "--image",
                              str(tmp_path / "first.png"), "--steps", "2", "--frames", "5", "--out", str(out),
                              "--no-progress"], capsys)
    assert code == 0, err
    assert read_video(out).shape == (5, 64, 96, 3)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Tiny diffusers DiT + VAE saved as safetensors, converted by ``hcjax convert``."""
    root = tmp_path_factory.mktemp("model")
    preset = configs.get("tiny")
    save_file(tiny_diffusers_dit(preset.dit, seed=2).state_dict(), root / "dit.safetensors")
    save_file({k: v.contiguous() for k, v in tiny_diffusers_vae(preset.vae, seed=3).state_dict().items()},
              root / "vae.safetensors")
    assert cli.main(["convert", "--model", "tiny", "--source", "diffusers", "--src", str(root / "dit.safetensors"),
                     "--vae-src", str(root / "vae.safetensors"), "--dst", str(root / "hcjax-tiny")]) == 0
    assert cli.main(["convert", "--model", "tiny", "--source", "diffusers", "--src", str(root / "dit.safetensors"),
                     "--dst", str(root / "hcjax-tiny-dit-only")]) == 0
    emb = text_inputs.placeholder("a converted model", preset.dit.text_dim, preset.dit.pooled_dim)
    text_inputs.save(root / "text.safetensors", emb, emb)
    return root


def test_sample_from_converted_model_dir(converted, tmp_path, capsys):
    out = tmp_path / "converted.mp4"
    code, _, err = _run(["sample", "--model", str(converted / "hcjax-tiny"), "--text-embeds",
                         str(converted / "text.safetensors"), "--steps", "2", "--cfg-scale", "3.0",
                         "--out", str(out), "--no-progress"], capsys)
    assert code == 0, err
    assert read_video(out).shape == (9, 64, 96, 3)


def test_convert_refuses_a_mismatched_checkpoint(converted, tmp_path, capsys):
    small = configs.get("tiny").dit.replace(hidden_size=32, rope_axes=(4, 6, 6))
    save_file(tiny_diffusers_dit(small).state_dict(), tmp_path / "other.safetensors")
    code, _, err = _run(["convert", "--model", "tiny", "--source", "diffusers", "--src",
                         str(tmp_path / "other.safetensors"), "--dst", str(tmp_path / "out")], capsys)
    assert code == 2 and "shape" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def _bad_embeddings(path):
    text_inputs.save(path, TextEmbeddings(np.zeros((1, 4, 7), np.float32), np.ones((1, 4), np.int32),
                                          np.zeros((1, 16), np.float32)))


@pytest.mark.parametrize("extra, message", [
    (["--frames", "8"], "not 4k+1"),
    (["--height", "40"], "multiple of 16"),
    (["--out", "{tmp}/x.avi"], "must end in .mp4"),
    (["--out", "{tmp}/missing/x.mp4"], "does not exist"),
    (["--model", "nope"], "neither a preset"),
    (["--model", "hunyuan-video-t2v"], "full size"),
    (["--model", "{tmp}"], "hcjax_model.json"),
    (["--image", "{tmp}/none.png"], "text-to-video model"),
    (["--model", "tiny-i2v"], "give --image"),
    (["--model", "tiny-i2v", "--image", "{tmp}/none.png"], "none.png"),
    (["--model", "tiny-i2v", "--image", "{tmp}/garbage.png"], "garbage.png"),
    (["--text-embeds", "{tmp}/bad.safetensors"], "text states must be"),
    (["--text-embeds", "{tmp}/none.safetensors"], "cannot read text embeddings"),
    (["--model", "{converted}", "--prompt", "x"], "--text-embeds"),
    (["--steps", "0"], "steps must be at least 1"),
    (["--model", "{converted}-dit-only", "--text-embeds", "{converted}/../text.safetensors"], "--vae-src"),
])
def test_invalid_input_is_one_clear_error_and_no_file(extra, message, tmp_path, converted, capsys):
    (tmp_path / "garbage.png").write_bytes(b"not an image")
    _bad_embeddings(tmp_path / "bad.safetensors")
    before = set(tmp_path.iterdir())
    argv = ["sample", "--model", "tiny", "--prompt", "x", "--out", str(tmp_path / "x.mp4"), "--no-progress"]
    argv += [a.format(tmp=tmp_path, converted=converted / "hcjax-tiny") for a in extra]
    code, _, err = _run(argv, capsys)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert set(tmp_path.iterdir()) == before
