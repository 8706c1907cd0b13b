"""The DiT's extension points, through which conditioning mechanisms plug in.

A mechanism is configured by a frozen dataclass in ``DiTConfig.mechanisms`` with a ``name`` and a
``build(dit_cfg, name) -> nn.Module``. The DiT creates that module under ``name`` and calls it as
``module(cond, ctx) -> Extension`` once per forward, before the blocks. The module owns its params; at
``init`` it is called with ``cond=None`` and must still create them (from dummy inputs of its own).

What an ``Extension`` can contribute:

* ``token_add [B, L_video, D]``: added to the video tokens right after patch embedding;
* ``prefix_tokens [B, Lp, D]`` with ``prefix_positions [Lp, 3]``: extra video-side tokens placed before the
  video tokens, with their own RoPE positions (t, h, w), dropped before the final layer;
* ``vec_add [B, D]``: added to the modulation vector;
* ``lead_vec [B, D]`` with ``lead_tokens``: the modulation vector of the first ``lead_tokens`` video tokens
  in every double / single block (the final layer keeps the common one): image-to-video's clean first frame;
* ``double_hooks`` / ``single_hooks``: ``(i, fn)`` pairs; ``fn`` runs after block ``i`` (0-based) on that
  stack's carry (``(img, txt)`` for double blocks, ``x = [img; txt]`` for single blocks) and returns the
  new carry. The image part is ``[prefix tokens; video tokens]``: the video tokens are always its last
  ``prod(ctx.grid)`` tokens.

Extra output heads are hooks that ``sow`` into a collection of their own and return the carry unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

Hook = Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class DiTContext:
    """What the DiT hands to each mechanism."""

    grid: tuple[int, int, int]           # video token grid (T', H', W')
    patch_embed: Callable[[jax.Array], jax.Array]   # the shared ``img_in``: latents -> tokens
    timestep: jax.Array                  # [B], 0..1000 scale
    vec: jax.Array                       # [B, D] modulation vector before any ``vec_add``
    embed_timestep: Callable[[jax.Array], jax.Array]   # the shared ``time_in``: timestep [B] -> [B, D]
    pooled_vec: jax.Array                # [B, D] the ``vector_in`` projection of the pooled text
    dtype: Any                           # compute dtype


@dataclasses.dataclass(frozen=True)
class Extension:
    token_add: jax.Array | None = None
    prefix_tokens: jax.Array | None = None
    prefix_positions: jax.Array | None = None
    vec_add: jax.Array | None = None
    lead_vec: jax.Array | None = None
    lead_tokens: int = 0
    double_hooks: tuple[tuple[int, Hook], ...] = ()
    single_hooks: tuple[tuple[int, Hook], ...] = ()

    def __post_init__(self):
        if (self.prefix_tokens is None) != (self.prefix_positions is None):
            raise ValueError("prefix_tokens and prefix_positions must be given together")
        if (self.lead_vec is None) != (self.lead_tokens == 0):
            raise ValueError("lead_vec and a positive lead_tokens must be given together")


def _add(a, b):
    if a is None:
        return b
    return a if b is None else a + b


def merge(extensions: Sequence[Extension]) -> Extension:
    """One extension from several, in mechanism order: additions summed, prefixes concatenated, hooks of the
    same block run in mechanism order."""
    token_add = vec_add = prefix = positions = None
    leads = [e for e in extensions if e.lead_vec is not None]
    if len(leads) > 1:
        raise ValueError("only one conditioning mechanism may set lead_vec")
    for e in extensions:
        token_add, vec_add = _add(token_add, e.token_add), _add(vec_add, e.vec_add)
        if e.prefix_tokens is not None:
            if prefix is None:
                prefix, positions = e.prefix_tokens, e.prefix_positions
            else:
                prefix = jnp.concatenate([prefix, e.prefix_tokens], axis=1)
                positions = jnp.concatenate([positions, e.prefix_positions], axis=0)
    return Extension(
        token_add=token_add,
        prefix_tokens=prefix,
        prefix_positions=positions,
        vec_add=vec_add,
        lead_vec=leads[0].lead_vec if leads else None,
        lead_tokens=leads[0].lead_tokens if leads else 0,
        double_hooks=tuple(h for e in extensions for h in e.double_hooks),
        single_hooks=tuple(h for e in extensions for h in e.single_hooks),
    )


def segments(depth: int, hooks: Sequence[tuple[int, Hook]]) -> list[tuple[int, int, list[Hook]]]:
    """Splits ``range(depth)`` at hooked blocks: ``[(start, stop, hooks run after block stop-1)]``."""
    by_block: dict[int, list[Hook]] = {}
    for i, fn in hooks:
        if not 0 <= i < depth:
            raise ValueError(f"hook after block {i} but the stack has {depth} blocks")
        by_block.setdefault(i, []).append(fn)
    out, start = [], 0
    for i in sorted(by_block):
        out.append((start, i + 1, by_block[i]))
        start = i + 1
    if start < depth or not out:
        out.append((start, depth, []))
    return out
