"""Sequence parallelism (Ulysses, ring) equals single-device attention and the single-device DiT.

The checks need 8 devices, so they run in one subprocess on simulated CPU devices
(``tests/sequence_parallel_checks.py``), which prints its measured errors as one JSON line."""

import pytest

from hcjax import configs
from hcjax.parallel import axis_degree, check_degree

from tests.jax_helpers import run_device_checks

TOL = 1e-5


@pytest.fixture(scope="module")
def results() -> dict:
    return run_device_checks("sequence_parallel_checks.py")


@pytest.mark.parametrize("mode", ["ulysses", "ring"])
def test_attention_values_and_gradients(results, mode):
    errors = {k: v for k, v in results.items() if k.startswith(f"attn_{mode}_")}
    assert len(errors) == 6, errors  # 2, 4, 8 shards (30 image tokens: padded), values and gradients
    assert max(errors.values()) < TOL, errors


def test_ring_query_chunks(results):
    assert results["chunked_stats"] < TOL and results["chunked_stats_grad"] < TOL, results


@pytest.mark.parametrize("mode", ["ulysses", "ring"])
def test_dit_forward(results, mode):
    errors = {k: v for k, v in results.items() if k.startswith(f"dit_{mode}_")}
    assert len(errors) >= 2, errors  # 2 and 4 sequence shards (and data x sequence, 8 shards for the ring)
    assert max(errors.values()) < TOL, errors


def test_kernels_under_a_mesh(results):
    """Splash (interpreted) per device over data x tensor, and inside Ulysses' shard_map."""
    keys = ("kernel_per_device", "kernel_per_device_grad", "kernel_in_ulysses")
    assert max(results[k] for k in keys) < TOL, results


def test_errors(results):
    assert "needs the 4 attention heads to divide evenly" in results["error_bad_degree"]
    assert "sequence_parallel='ring'" in results["error_bad_degree"]
    assert "sequence_parallel 'rings'" in results["error_bad_mode"]


def test_no_mesh_means_no_parallelism():
    assert axis_degree("sequence") == 1
    check_degree(24, 8)
    with pytest.raises(ValueError, match=r"\[2, 3, 4, 6, 8, 12, 24\]"):
        check_degree(24, 5)
    assert configs.DiTConfig().sequence_parallel == "none"
