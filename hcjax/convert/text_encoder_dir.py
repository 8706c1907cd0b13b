"""The text encoders inside a model directory: ``DIR/text_encoders/`` holds ``config.json`` (both encoder
configs), Orbax params ``llm/`` and ``clip/``, and the ``transformers`` tokenizers ``tokenizer/`` and
``tokenizer_2/``. Added to an existing model directory whole or not at all."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from hcjax.convert.model_dir import ModelDirError, _checkpointer, _differences, read_model_info
from hcjax.models.params import abstract_params
from hcjax.models.text.clip import CLIPTextConfig
from hcjax.models.text.llama import LlamaConfig

FOLDER = "text_encoders"


def has_text_encoders(model_dir: str | os.PathLike) -> bool:
    return (Path(model_dir) / FOLDER / "config.json").is_file()


def read_text_encoder_configs(model_dir: str | os.PathLike) -> tuple[LlamaConfig, CLIPTextConfig]:
    file = Path(model_dir) / FOLDER / "config.json"
    try:
        raw = json.loads(file.read_text())
        return LlamaConfig(**raw["llm"]), CLIPTextConfig(**raw["clip"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelDirError(f"{file}: unreadable text encoder config ({e}); run tools/convert_text_encoders.py "
                            "again") from None


def save_text_encoders(model_dir: str | os.PathLike, llm_cfg: LlamaConfig, llm_params: Any,
                       clip_cfg: CLIPTextConfig, clip_params: Any, llm_tokenizer: Any, clip_tokenizer: Any) -> None:
    """Adds the encoders to the model directory ``model_dir`` (their widths must fit its DiT)."""
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
    if problems:
        raise ModelDirError(f"{model_dir}: text encoders do not fit preset {preset!r}: " + "; ".join(problems))
    if (model_dir / FOLDER).exists():
        raise ModelDirError(f"{model_dir / FOLDER} exists already; delete it to replace the encoders")
    tmp = model_dir / f".{FOLDER}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        with _checkpointer() as ckptr:
            ckptr.save(tmp / "llm", llm_params)
            ckptr.save(tmp / "clip", clip_params)
            ckptr.wait_until_finished()
        llm_tokenizer.save_pretrained(tmp / "tokenizer")
        clip_tokenizer.save_pretrained(tmp / "tokenizer_2")
        (tmp / "config.json").write_text(json.dumps({"llm": dataclasses.asdict(llm_cfg),
                                                     "clip": dataclasses.asdict(clip_cfg)}, indent=2) + "\n")
        tmp.rename(model_dir / FOLDER)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_text_encoders(model_dir: str | os.PathLike):
    """A ``pipelines.text_encoding.TextEncoders`` from the model directory."""
    from transformers import AutoTokenizer

    from hcjax.pipelines.text_encoding import TextEncoders

    root = Path(model_dir).absolute() / FOLDER
    llm_cfg, clip_cfg = read_text_encoder_configs(model_dir)
    params = {}
    with _checkpointer() as ckptr:
        for name, target in (("llm", abstract_params(llm_cfg)), ("clip", abstract_params(clip_cfg))):
            try:
                stored = ckptr.metadata(root / name).item_metadata.tree
            except Exception as e:  # Orbax raises many kinds of errors on a damaged checkpoint
                raise ModelDirError(f"{root / name}: unreadable Orbax checkpoint ({e}); convert again") from None
            if problems := _differences(stored, target):
                raise ModelDirError(f"{root / name}: params differ from its config: {'; '.join(problems)}")
            params[name] = ckptr.restore(root / name, target)
    tokenizers = [AutoTokenizer.from_pretrained(root / t, local_files_only=True, padding_side="right")
                  for t in ("tokenizer", "tokenizer_2")]
    return TextEncoders(llm_cfg, params["llm"], clip_cfg, params["clip"], *tokenizers)
