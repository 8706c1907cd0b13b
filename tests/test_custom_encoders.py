"""``hcjax sample`` on a HunyuanCustom model directory with text encoders but without LLaVA's image path: refused
up front (the prompt is encoded together with the subject images)."""

from __future__ import annotations

import numpy as np

from hcjax import cli, configs, convert
from hcjax.io import write_png
from hcjax.models import random_params
from tests.test_encoder_dirs import sources  # noqa: F401  (fixture: tiny LLaVA / CLIP folders)
from tools import convert_text_encoders


def _custom_dir(path, root, image_path=True):
    preset = configs.get("tiny-custom")
    convert.save_model_dir(path, "tiny-custom", dit_params=random_params(preset.dit, 1),
                           vae_params=random_params(preset.vae, 1))
    convert_text_encoders.convert_folders(str(root / "llava"), str(root / "clip"), str(path), dtype="float32",
                                          image_path=image_path)
    return path


def test_custom_model_dir_without_image_path_is_refused(sources, tmp_path, capsys):  # noqa: F811
    model = _custom_dir(tmp_path / "m", sources[0], image_path=False)
    write_png(tmp_path / "ref.png", np.full((40, 30, 3), 200, np.uint8))
    out = tmp_path / "x.mp4"
    code = cli.main(["sample", "--model", str(model), "--prompt", "a fox", "--ref-image", str(tmp_path / "ref.png"),
                     "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and "no LLaVA image path" in err and not out.exists()
