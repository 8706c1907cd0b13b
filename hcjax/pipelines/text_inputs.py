"""Text conditioning of the DiT as data: the MLLM states, their mask and the CLIP pooled vector.

Until the Flax text encoders land, pipelines take these precomputed, from a ``.safetensors`` or ``.npz``
file with keys ``text_states [L, text_dim]``, ``text_mask [L]``, ``text_pooled [pooled_dim]`` (a leading
batch axis is allowed) and optionally the same three with a ``negative_`` prefix for classic CFG.
``placeholder`` makes a deterministic stand-in from the prompt for smoke runs of random-weight presets.
"""

from __future__ import annotations

import hashlib
import os

import flax.struct
import jax
import numpy as np

KEYS = ("text_states", "text_mask", "text_pooled")


@flax.struct.dataclass
class TextEmbeddings:
    states: jax.Array    # [B, L, text_dim]
    mask: jax.Array      # [B, L], 1 = real token (right padded)
    pooled: jax.Array    # [B, pooled_dim]

    @property
    def batch(self) -> int:
        return self.states.shape[0]

    def problems(self, text_dim: int, pooled_dim: int, what: str = "text") -> list[str]:
        out = []
        if self.states.ndim != 3 or self.states.shape[-1] != text_dim:
            out.append(f"{what} states must be [B, L, {text_dim}], got {tuple(self.states.shape)}")
        if tuple(self.mask.shape) != tuple(self.states.shape[:2]):
            out.append(f"{what} mask must be [B, L] = {tuple(self.states.shape[:2])}, got {tuple(self.mask.shape)}")
        if tuple(self.pooled.shape) != (self.states.shape[0], pooled_dim):
            out.append(f"{what} pooled must be [B, {pooled_dim}], got {tuple(self.pooled.shape)}")
        return out

    def repeat(self, batch: int) -> "TextEmbeddings":
        """Broadcast a batch of 1 to ``batch`` samples."""
        if self.batch == batch:
            return self
        if self.batch != 1:
            raise ValueError(f"cannot use {self.batch} text embeddings for a batch of {batch}")
        return jax.tree.map(lambda x: np.repeat(np.asarray(x), batch, axis=0), self)


def _batched(x: np.ndarray, ndim: int) -> np.ndarray:
    return x[None] if x.ndim == ndim - 1 else x


def load(path: str | os.PathLike) -> tuple[TextEmbeddings, TextEmbeddings | None]:
    """``(positive, negative or None)`` from a ``.safetensors`` / ``.npz`` file (see module doc)."""
    path = os.fspath(path)
    try:
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            data = load_file(path)
        elif path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as f:
                data = dict(f)
        else:
            raise ValueError("use a .safetensors or .npz file")
    except Exception as e:  # noqa: BLE001 - any read failure becomes one clear message
        raise ValueError(f"cannot read text embeddings {path!r}: {e}") from None

    def part(prefix: str) -> TextEmbeddings | None:
        present = [f"{prefix}{k}" in data for k in KEYS]
        if not any(present):
            return None
        if not all(present):
            missing = [f"{prefix}{k}" for k, p in zip(KEYS, present) if not p]
            raise ValueError(f"text embeddings {path!r} lack {missing}; a set needs all of {list(KEYS)}")
        return TextEmbeddings(_batched(data[f"{prefix}text_states"].astype(np.float32), 3),
                              _batched(data[f"{prefix}text_mask"].astype(np.int32), 2),
                              _batched(data[f"{prefix}text_pooled"].astype(np.float32), 2))

    positive = part("")
    if positive is None:
        raise ValueError(f"text embeddings {path!r} have none of {list(KEYS)}")
    return positive, part("negative_")


def save(path: str | os.PathLike, positive: TextEmbeddings, negative: TextEmbeddings | None = None) -> None:
    """Writes the file ``load`` reads (``.safetensors`` or ``.npz`` by suffix)."""
    data = {}
    for prefix, emb in (("", positive), ("negative_", negative)):
        if emb is not None:
            data.update({f"{prefix}{k}": np.ascontiguousarray(np.asarray(v))
                         for k, v in zip(KEYS, (emb.states, emb.mask, emb.pooled))})
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.numpy import save_file

        save_file(data, path)
    else:
        np.savez(path, **data)


def placeholder(prompt: str, text_dim: int, pooled_dim: int, length: int = 32) -> TextEmbeddings:
    """A deterministic stand-in for encoded ``prompt`` (a seed from its SHA-256; one valid token per word,
    plus one): only for smoke runs of random-weight models, never a substitute for real text encoders."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    valid = min(length, len(prompt.split()) + 1)
    mask = (np.arange(length) < valid).astype(np.int32)
    states = rng.standard_normal((1, length, text_dim)).astype(np.float32) * mask[None, :, None]
    return TextEmbeddings(states, mask[None], rng.standard_normal((1, pooled_dim)).astype(np.float32))
