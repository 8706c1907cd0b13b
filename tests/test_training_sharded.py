"""The train step sharded over 8 simulated CPU devices (fsdp=4 x tensor=2, and data=2 x sequence=4 with
Ulysses attention) gives the loss and the updated state (params, AdamW moments, EMA) of the unsharded step,
over two steps with gradient accumulation, text dropout and weight decay. Checks in
``tests/training_sharding_checks.py``."""

import pytest

from tests.jax_helpers import run_device_checks

TOL = 1e-5


@pytest.fixture(scope="module")
def results() -> dict:
    return run_device_checks("training_sharding_checks.py")


@pytest.mark.parametrize("mesh", ["fsdp4_tensor2", "data2_seq4"])
def test_sharded_step_equals_unsharded(results, mesh):
    errors = {k: v for k, v in results.items() if k.startswith(mesh) and ("_loss" in k or "_state" in k)}
    assert len(errors) == 4, errors
    assert max(errors.values()) < TOL, errors


def test_params_really_sharded(results):
    # weights split over fsdp / tensor; with sequence parallelism their hidden side is split over `sequence`
    assert results["fsdp4_tensor2_sharded_params"] > 30, results
    assert results["data2_seq4_sharded_params"] > 30, results
