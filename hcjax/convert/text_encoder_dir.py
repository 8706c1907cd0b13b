"""The text encoders inside a model directory: ``DIR/text_encoders/`` holds ``config.json`` (both encoder
configs), Orbax params ``llm/`` and ``clip/``, and the ``transformers`` tokenizers ``tokenizer/`` and
``tokenizer_2/``. Optionally also LLaVA's image path (HunyuanCustom's image-conditioned text): Orbax params
``vision/`` (CLIP vision tower) and ``projector/``, and a ``"llava"`` entry in ``config.json`` (their configs and
the merge facts). Added to an existing model directory whole or not at all."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from hcjax.convert.llava import STRATEGIES, LlavaImagePath
from hcjax.convert.model_dir import ModelDirError, _checkpointer, _differences, _new_folder, _restore_checked
from hcjax.convert.model_dir import read_model_info
from hcjax.models.params import abstract_params
from hcjax.models.text.clip import CLIPTextConfig, CLIPVisionConfig
from hcjax.models.text.llama import LlamaConfig
from hcjax.models.text.llava import LlavaProjector

FOLDER = "text_encoders"
_PROJECTOR_FIELDS = ("text_hidden", "vision_hidden", "bias", "dtype", "param_dtype")


def _redo(model_dir: str | os.PathLike, llava: bool = False) -> str:
    folder = Path(model_dir).absolute() / FOLDER
    return (f"delete {folder} and run tools/convert_text_encoders.py again"
            + (" with --llm a full LLaVA folder (config with vision_config)" if llava else ""))


def has_text_encoders(model_dir: str | os.PathLike) -> bool:
    return (Path(model_dir) / FOLDER / "config.json").is_file()


def _read_config(model_dir: str | os.PathLike) -> dict:
    file = Path(model_dir) / FOLDER / "config.json"
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError:
        raise ModelDirError(f"{Path(model_dir).absolute()}: holds no text encoders; add them with "
                            "tools/convert_text_encoders.py") from None
    except (OSError, ValueError) as e:
        raise ModelDirError(f"{file}: unreadable text encoder config ({e}); {_redo(model_dir)}") from None
    if not isinstance(raw, dict):
        raise ModelDirError(f"{file}: not a JSON object; {_redo(model_dir)}")
    return raw


def has_llava_image_path(model_dir: str | os.PathLike) -> bool:
    """Whether the model directory holds LLaVA's vision tower and projector with the text encoders."""
    return has_text_encoders(model_dir) and "llava" in _read_config(model_dir)


def read_text_encoder_configs(model_dir: str | os.PathLike) -> tuple[LlamaConfig, CLIPTextConfig]:
    raw = _read_config(model_dir)
    try:
        return LlamaConfig(**raw["llm"]), CLIPTextConfig(**raw["clip"])
    except (ValueError, KeyError, TypeError) as e:
        raise ModelDirError(f"{Path(model_dir) / FOLDER / 'config.json'}: bad text encoder config ({e}); "
                            f"{_redo(model_dir)}") from None


def _llava_entry(path: LlavaImagePath) -> dict:
    """The ``"llava"`` entry of ``config.json``."""
    layer = path.feature_layer if isinstance(path.feature_layer, int) else list(path.feature_layer)
    return {"image_token_index": path.image_token_index, "pad_token_id": path.config_pad_token_id,
            "vision_feature_layer": layer, "vision_feature_select_strategy": path.select_strategy,
            "vision": dataclasses.asdict(path.vision_cfg),
            "projector": {f: getattr(path.projector, f) for f in _PROJECTOR_FIELDS}}


def read_llava_entry(model_dir: str | os.PathLike) -> LlavaImagePath:
    """The ``LlavaImagePath`` of the ``"llava"`` entry, without params."""
    entry = _read_config(model_dir).get("llava")
    if entry is None:
        raise ModelDirError(f"{Path(model_dir).absolute() / FOLDER} holds no LLaVA image path; "
                            f"{_redo(model_dir, llava=True)}")
    try:
        layer = entry["vision_feature_layer"]
        return LlavaImagePath(CLIPVisionConfig(**entry["vision"]), None, LlavaProjector(**entry["projector"]), None,
                              entry["image_token_index"], entry["pad_token_id"],
                              layer if isinstance(layer, int) else tuple(layer),
                              entry["vision_feature_select_strategy"])
    except (ValueError, KeyError, TypeError) as e:
        raise ModelDirError(f"{Path(model_dir) / FOLDER / 'config.json'}: bad 'llava' entry ({e}); "
                            f"{_redo(model_dir, llava=True)}") from None


def _image_path_problems(path: LlavaImagePath, llm_cfg: LlamaConfig) -> list[str]:
    vision, projector, n = path.vision_cfg, path.projector, path.vision_cfg.num_layers
    problems = []
    if projector.text_hidden != llm_cfg.hidden_size:
        problems.append(f"the projector's output {projector.text_hidden} is not the LLM's width "
                        f"{llm_cfg.hidden_size}")
    if projector.vision_hidden != len(path.feature_layers) * vision.hidden_size:
        problems.append(f"the projector's input {projector.vision_hidden} is not {len(path.feature_layers)} "
                        f"feature layer(s) of width {vision.hidden_size}")
    if not all(-(n + 1) <= i <= n for i in path.feature_layers):
        problems.append(f"vision_feature_layer {path.feature_layer} outside the tower's {n + 1} hidden states")
    if path.select_strategy not in STRATEGIES:
        problems.append(f"vision_feature_select_strategy {path.select_strategy!r} not in {STRATEGIES}")
    if not 0 <= path.image_token_index < llm_cfg.vocab_size:
        problems.append(f"image_token_index {path.image_token_index} outside the LLM's vocabulary")
    for name, tree, cfg in (("vision", path.vision_params, vision), ("projector", path.projector_params,
                                                                      projector)):
        problems += [f"{name} {p}" for p in _differences(tree, abstract_params(cfg))]
    return problems


def save_text_encoders(model_dir: str | os.PathLike, llm_cfg: LlamaConfig, llm_params: Any,
                       clip_cfg: CLIPTextConfig, clip_params: Any, llm_tokenizer: Any, clip_tokenizer: Any,
                       image_path: LlavaImagePath | None = None) -> None:
    """Adds the encoders (and LLaVA's ``image_path`` when given) to the model directory ``model_dir``; their
    widths must fit its DiT. Everything is checked before anything is written."""
    model_dir = Path(model_dir).absolute()
    preset = read_model_info(model_dir)["preset"]
    from hcjax import configs

    dit = configs.get(preset).dit
    problems = []
    if llm_cfg.hidden_size != dit.text_dim:
        problems.append(f"the LLM's hidden size {llm_cfg.hidden_size} is not the DiT's text_dim {dit.text_dim}")
    if clip_cfg.hidden_size != dit.pooled_dim:
        problems.append(f"CLIP's hidden size {clip_cfg.hidden_size} is not the DiT's pooled_dim {dit.pooled_dim}")
    for name, tree, want in (("llm", llm_params, abstract_params(llm_cfg)), ("clip", clip_params,
                                                                           abstract_params(clip_cfg))):
        problems += [f"{name} {p}" for p in _differences(tree, want)]
    if image_path is not None:
        problems += _image_path_problems(image_path, llm_cfg)
    if problems:
        raise ModelDirError(f"{model_dir}: text encoders do not fit preset {preset!r}: " + "; ".join(problems))
    config = {"llm": dataclasses.asdict(llm_cfg), "clip": dataclasses.asdict(clip_cfg)}
    trees = {"llm": llm_params, "clip": clip_params}
    if image_path is not None:
        config["llava"] = _llava_entry(image_path)
        trees |= {"vision": image_path.vision_params, "projector": image_path.projector_params}
    with _new_folder(model_dir / FOLDER, "delete it to replace the encoders") as tmp:
        with _checkpointer() as ckptr:
            for name, tree in trees.items():
                ckptr.save(tmp / name, tree)
            ckptr.wait_until_finished()
        llm_tokenizer.save_pretrained(tmp / "tokenizer")
        clip_tokenizer.save_pretrained(tmp / "tokenizer_2")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_text_encoders(model_dir: str | os.PathLike):
    """A ``pipelines.text_encoding.TextEncoders`` from the model directory (LLaVA's image path, if stored, is
    left on disk: ``load_llava_image_path``)."""
    from transformers import AutoTokenizer

    from hcjax.pipelines.text_encoding import TextEncoders

    root = Path(model_dir).absolute() / FOLDER
    llm_cfg, clip_cfg = read_text_encoder_configs(model_dir)
    with _checkpointer() as ckptr:
        params = {name: _restore_checked(ckptr, root / name, abstract_params(cfg), _redo(model_dir))
                  for name, cfg in (("llm", llm_cfg), ("clip", clip_cfg))}
    tokenizers = [AutoTokenizer.from_pretrained(root / t, local_files_only=True, padding_side="right")
                  for t in ("tokenizer", "tokenizer_2")]
    return TextEncoders(llm_cfg, params["llm"], clip_cfg, params["clip"], *tokenizers)


def load_llava_image_path(model_dir: str | os.PathLike) -> LlavaImagePath:
    """LLaVA's vision tower, projector and merge facts stored with the text encoders (``ModelDirError`` naming
    the fix when the directory has none)."""
    root = Path(model_dir).absolute() / FOLDER
    path = read_llava_entry(model_dir)
    fix = _redo(model_dir, llava=True)
    with _checkpointer() as ckptr:
        vision = _restore_checked(ckptr, root / "vision", abstract_params(path.vision_cfg), fix)
        projector = _restore_checked(ckptr, root / "projector", abstract_params(path.projector), fix)
    return dataclasses.replace(path, vision_params=vision, projector_params=projector)
