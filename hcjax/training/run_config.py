"""Experiment configs: ``ml_collections`` files with ``get_config(variant)`` and ``--config.key=value``
overrides, checked against the config's own keys and types before anything runs."""

from __future__ import annotations

import ast
import importlib.util
import os
from typing import Sequence

import ml_collections


class ConfigError(ValueError):
    """A config that cannot be loaded or overridden; the message names the fix."""


def load(spec: str) -> ml_collections.ConfigDict:
    """``PATH.py`` or ``PATH.py:VARIANT`` -> the locked config of ``get_config(VARIANT)``."""
    path, _, variant = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} not found; pass e.g. --config experiments/configs/t2v.py:tiny")
    module_spec = importlib.util.spec_from_file_location(f"hcjax_experiment_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path} has no get_config(variant) function")
    config = module.get_config(variant or None)
    config.lock()
    return config


def _parse(text: str, current):
    if isinstance(current, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return text
        raise ValueError(f"cannot read {text!r} as a {type(current).__name__}") from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    if isinstance(current, tuple) and isinstance(value, str):
        value = (value,)
    if current is not None and not isinstance(value, type(current)):
        raise ValueError(f"expected a {type(current).__name__}, got {text!r}")
    return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Applies ``config.a.b=value`` items (the ``--`` already stripped); every problem is reported at once."""
    problems = []
    for item in overrides:
        key, eq, text = item.partition("=")
        if not key.startswith("config.") or not eq:
            problems.append(f"{item!r}: write --config.KEY=VALUE")
            continue
        parts = key[len("config."):].split(".")
        node = config
        for depth, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                where = ".".join(parts[:depth]) or "config"
                keys = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                problems.append(f"--{key}: {where} has no key {part!r}; its keys are {keys}")
                break
            if depth == len(parts) - 1:
                try:
                    with node.unlocked():
                        node[part] = _parse(text, node[part])
                except (ValueError, TypeError) as e:
                    problems.append(f"--{key}: {e}")
            else:
                node = node[part]
    if problems:
        raise ConfigError("bad config overrides:\n  " + "\n  ".join(problems))
    return config
