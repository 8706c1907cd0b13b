"""The Flax Llama text encoder against a tiny random-init ``transformers.LlamaModel``: the hidden state the
reference takes (``hidden_states[-3]``) and the final one, with right padding, fp32 relative L2 < 1e-5; the
full-size parameter count and key mapping; strictness."""

import chex
import jax
import numpy as np
import pytest
import torch

from hcjax.convert import CheckpointMismatch
from hcjax.convert.llama import llama_from_torch
from hcjax.models import abstract_params, count_params
from hcjax.models.text.llama import LlamaConfig, LlamaEncoder
from tests.torch_reference import rel_l2

transformers = pytest.importorskip("transformers")
TOL = 1e-5
TINY = LlamaConfig(vocab_size=61, hidden_size=64, intermediate_size=96, num_layers=4, num_heads=4, num_kv_heads=2,
                   dtype="float32", param_dtype="float32")


def _hf_config(cfg: LlamaConfig):
    return transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        rms_norm_eps=cfg.rms_norm_eps, rope_theta=cfg.rope_theta, max_position_embeddings=8192)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    ref = transformers.LlamaModel(_hf_config(TINY)).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, TINY.vocab_size, (2, 40), generator=g)
    mask = torch.ones(2, 40, dtype=torch.int64)
    mask[1, 23:] = 0
    with torch.no_grad():
        hidden = ref(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    return ref, ids, mask, hidden


@pytest.mark.parametrize("prefix", ["", "model."])
def test_hidden_states_match(tiny, prefix):
    ref, ids, mask, hidden = tiny
    params = llama_from_torch({prefix + k: v for k, v in ref.state_dict().items()}, TINY)
    run = jax.jit(LlamaEncoder(TINY).apply, static_argnames="output_layer")
    skip2 = np.asarray(run({"params": params}, ids.numpy(), mask.numpy(), output_layer=TINY.num_layers - 2))
    final = np.asarray(run({"params": params}, ids.numpy(), mask.numpy()))
    chex.assert_shape(skip2, (2, 40, TINY.hidden_size))
    assert rel_l2(skip2, hidden[-3].numpy()) < TOL          # every position, padding included
    assert rel_l2(final, hidden[-1].numpy()) < TOL
    assert rel_l2(skip2, final) > 0.1                         # the readout layer matters


def test_full_size_count_and_keys():
    with torch.device("meta"):
        ref = transformers.LlamaModel(_hf_config(LlamaConfig()))
    n_ref = sum(p.numel() for p in ref.parameters())
    assert count_params(abstract_params(LlamaConfig())) == n_ref
    shapes = llama_from_torch(ref.state_dict(), LlamaConfig(), shapes_only=True)
    assert count_params(shapes) == n_ref


def test_strict(tiny):
    sd = dict(tiny[0].state_dict())
    sd.pop("layers.1.mlp.up_proj.weight")
    sd["layers.1.mlp.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointMismatch) as e:
        llama_from_torch(sd, TINY)
    assert "layers.1.mlp.up_proj.weight" in str(e.value) and "layers.1.mlp.extra.weight" in str(e.value)
