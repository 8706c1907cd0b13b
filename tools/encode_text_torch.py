"""Text embeddings for ``hcjax sample --text-embeds`` from the official PyTorch text encoders (reference
section 4), until the Flax encoders land.

MLLM: the video template around the prompt (crop 95; the image template, crop 36, for 1-frame samples),
tokenised to 256 + crop tokens with right padding, ``hidden_states[-3]`` of the Llama (no final norm), the
template positions cropped. CLIP-L: 77 tokens, ``pooler_output``. The negative prompt (for CFG) goes the same
way. Local model folders only: nothing is downloaded.

    python tools/encode_text_torch.py --llm ckpts/text_encoder --clip ckpts/text_encoder_2 \\
        --prompt "a red fox running through fresh snow" [--negative-prompt ...] --out fox.safetensors
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from hcjax.models.text import templates  # noqa: E402
from hcjax.pipelines.text_inputs import TextEmbeddings, save  # noqa: E402

@torch.no_grad()
def mllm_states(llm, tokenizer, prompts: list[str], video: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(states [B, 256, D], mask [B, 256])``: ``hidden_states[-3]`` after the template crop."""
    template = templates.VIDEO if video else templates.IMAGE
    ids, mask = templates.tokenize(tokenizer, prompts, template)
    out = llm(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long(),
              output_hidden_states=True)
    return templates.crop(out.hidden_states[-3].float().numpy(), mask, template)


@torch.no_grad()
def clip_pooled(clip, tokenizer, prompts: list[str]) -> np.ndarray:
    """``[B, 768]``: CLIP-L ``pooler_output`` (the EOS token's final-LayerNorm state)."""
    ids, mask = templates.tokenize_clip(tokenizer, prompts)
    return clip(input_ids=torch.from_numpy(ids).long(),
                attention_mask=torch.from_numpy(mask).long()).pooler_output.float().numpy()


def encode(llm, llm_tokenizer, clip, clip_tokenizer, prompts: list[str], video: bool = True) -> TextEmbeddings:
    states, mask = mllm_states(llm, llm_tokenizer, prompts, video)
    return TextEmbeddings(states, mask, clip_pooled(clip, clip_tokenizer, prompts))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", required=True, help="local folder of the Llama text encoder (AutoModel)")
    parser.add_argument("--clip", required=True, help="local folder of CLIP-L (CLIPTextModel)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative-prompt",
                        help=f"for CFG (default: the official one: {templates.DEFAULT_NEGATIVE!r})")
    parser.add_argument("--no-negative", action="store_true", help="write no negative set (no CFG)")
    parser.add_argument("--image", action="store_true", help="1-frame sample: the image template")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--out", required=True, help=".safetensors or .npz")
    args = parser.parse_args()
    from transformers import AutoModel, AutoTokenizer, CLIPTextModel, CLIPTokenizer

    dtype = getattr(torch, args.dtype)
    llm = AutoModel.from_pretrained(args.llm, torch_dtype=dtype, local_files_only=True).eval()
    llm_tok = AutoTokenizer.from_pretrained(args.llm, padding_side="right", local_files_only=True)
    clip = CLIPTextModel.from_pretrained(args.clip, torch_dtype=dtype, local_files_only=True).eval()
    clip_tok = CLIPTokenizer.from_pretrained(args.clip, local_files_only=True)
    positive = encode(llm, llm_tok, clip, clip_tok, [args.prompt], video=not args.image)
    negative = None
    if not args.no_negative:
        text = templates.DEFAULT_NEGATIVE if args.negative_prompt is None else args.negative_prompt
        negative = encode(llm, llm_tok, clip, clip_tok, [text], video=not args.image)
    save(args.out, positive, negative)
    print(f"wrote {args.out}: text {positive.states.shape} ({int(positive.mask.sum())} valid tokens), "
          f"pooled {positive.pooled.shape}{', with negative' if negative is not None else ''}")


if __name__ == "__main__":
    main()
