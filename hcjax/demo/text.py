"""The demo model's text encoder: whole words of the demo's captions -> fixed vectors.

A word-level tokenizer over ``world.vocabulary()`` (plus ``<s>`` in front of every prompt, so the empty prompt is
one token, and ``<unk>`` for any other word) and a frozen table of seeded Gaussian vectors with sinusoidal
positions added: no params to train or ship, reproduced exactly from ``SEED``. The DiT's token refiner learns to
read it, as HunyuanVideo's DiT learns to read its frozen Llama. The pooled vector is the mean of the word
vectors (the CLIP slot).
"""

from __future__ import annotations

import re

import numpy as np

from hcjax.demo import world
from hcjax.pipelines.text_inputs import TextEmbeddings

TEXT_LEN, TEXT_DIM, SEED = 16, 64, 2024
BOS, UNK = "<s>", "<unk>"
POSITION_SCALE = 0.5


def words(prompt: str) -> list[str]:
    return re.findall(r"[a-z]+", prompt.lower())


class DemoTextEncoder:
    """``encode(prompts) -> TextEmbeddings`` of ``[B, TEXT_LEN, TEXT_DIM]`` states, their mask and ``[B, TEXT_DIM]``
    pooled vectors (float32)."""

    def __init__(self):
        self.vocab = [BOS, UNK, *world.vocabulary()]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        rng = np.random.default_rng(SEED)
        self.table = rng.standard_normal((len(self.vocab), TEXT_DIM)).astype(np.float32)
        pos = np.arange(TEXT_LEN)[:, None] / 10_000 ** (np.arange(0, TEXT_DIM, 2) / TEXT_DIM)[None]
        self.positions = (POSITION_SCALE * np.concatenate([np.sin(pos), np.cos(pos)], -1)).astype(np.float32)

    def unknown(self, prompt: str) -> list[str]:
        """The words of ``prompt`` the model never saw (they become ``<unk>``)."""
        return [w for w in words(prompt) if w not in self.index]

    def ids(self, prompt: str) -> list[int]:
        """Token ids: ``<s>`` then the words, cut to ``TEXT_LEN``."""
        return [self.index[BOS], *(self.index.get(w, self.index[UNK]) for w in words(prompt))][:TEXT_LEN]

    def encode(self, prompts: list[str]) -> TextEmbeddings:
        n = len(prompts)
        states = np.zeros((n, TEXT_LEN, TEXT_DIM), np.float32)
        mask = np.zeros((n, TEXT_LEN), np.int32)
        pooled = np.zeros((n, TEXT_DIM), np.float32)
        for i, prompt in enumerate(prompts):
            ids = self.ids(prompt)
            vectors = self.table[ids]
            states[i, : len(ids)] = vectors + self.positions[: len(ids)]
            mask[i, : len(ids)] = 1
            pooled[i] = vectors.mean(0)
        return TextEmbeddings(states, mask, pooled)
