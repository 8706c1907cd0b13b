"""Converts the Hugging Face text encoders (the Llama-3 MLLM and CLIP-L) into an ``hcjax convert`` model
directory, so that ``hcjax sample --model DIR --prompt ...`` encodes prompts itself.

    python tools/convert_text_encoders.py --llm ckpts/text_encoder --clip ckpts/text_encoder_2 --model-dir hcjax-t2v

``--llm`` is a ``LlamaModel`` / ``LlamaForCausalLM`` folder or a full LLaVA folder (its language model is
used, and its image path - CLIP vision tower, projector, merge facts - is stored too unless ``--no-image-path``);
``--clip`` a CLIP(-Text)Model folder. Local folders only (config, tokenizer, safetensors / .bin weights).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from hcjax import convert  # noqa: E402
from hcjax.convert.clip import clip_text_from_torch  # noqa: E402
from hcjax.convert.llama import llama_from_torch  # noqa: E402
from hcjax.convert.llava import llava_image_path_from_torch  # noqa: E402
from hcjax.convert.text_encoder_dir import save_text_encoders  # noqa: E402
from hcjax.models.text.clip import CLIPTextConfig  # noqa: E402
from hcjax.models.text.llama import LlamaConfig  # noqa: E402


def convert_folders(llm_dir: str, clip_dir: str, model_dir: str, dtype: str = "float16",
                    image_path: bool = True) -> None:
    """Converts the two encoders (and a LLaVA ``llm_dir``'s image path, with ``image_path``) into ``model_dir``."""
    from transformers import AutoConfig, AutoTokenizer

    hf = AutoConfig.from_pretrained(llm_dir, local_files_only=True)
    hf_llm = getattr(hf, "text_config", hf)   # a LLaVA folder: its language model
    llm_cfg = LlamaConfig.from_transformers(hf_llm, dtype=dtype, param_dtype=dtype)
    hf_clip = AutoConfig.from_pretrained(clip_dir, local_files_only=True)
    hf_clip = getattr(hf_clip, "text_config", hf_clip)
    clip_cfg = CLIPTextConfig.from_transformers(hf_clip, dtype=dtype, param_dtype=dtype)
    llm_weights = convert.load_pretrained_weights(llm_dir)
    llm_params = llama_from_torch(llm_weights, llm_cfg)
    llava = None
    if image_path and hasattr(hf, "vision_config"):
        llava = llava_image_path_from_torch(llm_weights, hf, dtype)
    clip_params = clip_text_from_torch(convert.load_pretrained_weights(clip_dir), clip_cfg)
    tokenizers = [AutoTokenizer.from_pretrained(d, local_files_only=True, padding_side="right")
                  for d in (llm_dir, clip_dir)]
    save_text_encoders(model_dir, llm_cfg, llm_params, clip_cfg, clip_params, *tokenizers, image_path=llava)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", required=True)
    parser.add_argument("--clip", required=True)
    parser.add_argument("--model-dir", required=True, help="a directory written by `hcjax convert`")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--no-image-path", action="store_true",
                        help="with a LLaVA --llm: store its language model only, not the vision tower / projector")
    args = parser.parse_args()
    try:
        convert_folders(args.llm, args.clip, args.model_dir, args.dtype, image_path=not args.no_image_path)
    except (convert.CheckpointError, convert.ModelDirError) as e:
        raise SystemExit(str(e)) from None
    print(f"added the text encoders to {args.model_dir}")


if __name__ == "__main__":
    main()
