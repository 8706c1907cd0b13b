"""HuMo's progressive task mix: the audio-visual sync schedule, the per-sample draw (its rate, determinism and
host split), the ``task`` key through ``make_iterator`` (hosts, exact resume) and config errors."""

import chex
import numpy as np
import pytest

from hcjax.training.data import SyntheticSource, make_iterator
from hcjax.training.task_mixer import TASK_AUDIO, TASK_SUBJECT, TaskMixer

MIXER = TaskMixer(stage1_steps=100, ramp_steps=200, start_fraction=0.2, end_fraction=0.5)


def test_schedule_values():
    m = MIXER
    assert m.audio_fraction(0) == 0.0 and m.audio_fraction(99) == 0.0
    assert m.audio_fraction(100) == pytest.approx(0.2)
    assert m.audio_fraction(200) == pytest.approx(0.35)
    assert m.audio_fraction(150) == pytest.approx(0.275)
    assert m.audio_fraction(300) == pytest.approx(0.5) and m.audio_fraction(10**7) == pytest.approx(0.5)
    values = [m.audio_fraction(k) for k in range(0, 400, 7)]
    assert values == sorted(values)
    jump = TaskMixer(stage1_steps=5)                     # no ramp: straight to end_fraction after stage 1
    assert jump.audio_fraction(4) == 0.0 and jump.audio_fraction(5) == 0.5
    assert TaskMixer().audio_fraction(0) == 0.5          # defaults: no stage 1, no ramp


@pytest.mark.parametrize("k", [0, 99, 100, 200, 300, 5000])
def test_draw_rate_matches_schedule(k):
    n = 10_000
    tasks = MIXER.draw(seed=3, batch_index=k, rows=np.arange(n))
    chex.assert_shape(tasks, (n,))
    chex.assert_type(tasks, np.int32)
    assert set(np.unique(tasks)) <= {TASK_SUBJECT, TASK_AUDIO}
    p, observed = MIXER.audio_fraction(k), float(np.mean(tasks == TASK_AUDIO))
    if p == 0.0:
        assert observed == 0.0
    else:
        assert abs(observed - p) < 4 * np.sqrt(p * (1 - p) / n), (k, p, observed)


def test_draw_is_deterministic_and_splits_over_rows():
    whole = MIXER.draw(1, 250, np.arange(64))
    np.testing.assert_array_equal(whole, MIXER.draw(1, 250, np.arange(64)))
    parts = np.concatenate([MIXER.draw(1, 250, np.arange(p * 16, (p + 1) * 16)) for p in range(4)])
    np.testing.assert_array_equal(parts, whole)
    np.testing.assert_array_equal(MIXER.draw(1, 250, [40, 3, 17]), whole[[40, 3, 17]])
    assert not np.array_equal(whole, MIXER.draw(2, 250, np.arange(64)))       # other seed
    assert not np.array_equal(whole, MIXER.draw(1, 251, np.arange(64)))       # other batch
    # one uniform per row: a larger audio share only turns subject rows into audio rows
    more = TaskMixer(stage1_steps=100, ramp_steps=200, end_fraction=0.9).draw(1, 250, np.arange(64))
    assert np.all(more >= whole) and more.sum() > whole.sum()
    chex.assert_shape(MIXER.draw(0, 5, np.arange(0)), (0,))


def _run(source, mixer, n, **kw):
    it = make_iterator(source, global_batch=4, seed=11, num_threads=0, task_mixer=mixer, **kw)
    return it, [next(it) for _ in range(n)]


def test_iterator_task_key_hosts_and_resume():
    source = SyntheticSource(12, latent_shapes=((1, 2, 2),), latent_channels=2, text_len=2, text_dim=4,
                             pooled_dim=2, num_clips=2)
    mixer = TaskMixer(stage1_steps=2, ramp_steps=4)
    _, single = _run(source, mixer, 10, process_index=0, process_count=1)    # 3 batches per epoch
    for k, batch in enumerate(single):
        chex.assert_shape(batch["task"], (4,))
        chex.assert_type(batch["task"], np.int32)
        np.testing.assert_array_equal(batch["task"], mixer.draw(11, k, np.arange(4)))
    tasks = np.stack([b["task"] for b in single])
    assert not tasks[:2].any() and tasks[2:].any() and not tasks[2:].all()
    hosts = [_run(source, mixer, 10, process_index=p, process_count=2)[1] for p in range(2)]
    for k in range(10):
        chex.assert_shape(hosts[0][k]["task"], (2,))
        np.testing.assert_array_equal(np.concatenate([hosts[0][k]["task"], hosts[1][k]["task"]]), tasks[k])
        np.testing.assert_array_equal(np.concatenate([hosts[0][k]["latents"], hosts[1][k]["latents"]]),
                                      single[k]["latents"])
    first, _ = _run(source, mixer, 4, process_index=1, process_count=2)
    state = first.get_state()
    resumed = make_iterator(source, global_batch=4, seed=11, num_threads=0, task_mixer=mixer, process_index=1,
                            process_count=2)
    resumed.set_state(state)
    for k in range(4, 10):
        np.testing.assert_array_equal(next(resumed)["task"], hosts[1][k]["task"])


def test_iterator_state_is_the_same_with_and_without_mixer():
    source = SyntheticSource(8, latent_shapes=((1, 2, 2),), latent_channels=2, text_len=2, text_dim=4,
                             pooled_dim=2, num_clips=2)
    with_mixer, _ = _run(source, MIXER, 3, process_index=0, process_count=1)
    without, plain = _run(source, None, 3, process_index=0, process_count=1)
    assert "task" not in plain[0]
    assert with_mixer.get_state() == without.get_state()


@pytest.mark.parametrize("kw", [dict(start_fraction=-0.1), dict(end_fraction=1.5), dict(stage1_steps=-1),
                                dict(ramp_steps=-3), dict(ramp_steps=2.5), dict(start_fraction="0.2")])
def test_bad_config_raises(kw):
    with pytest.raises(ValueError, match="TaskMixer"):
        TaskMixer(**kw)


def test_bad_draw_arguments_raise():
    with pytest.raises(ValueError, match="rows"):
        MIXER.draw(0, 1, [[0, 1]])
    with pytest.raises(ValueError, match="rows"):
        MIXER.draw(0, 1, [-1])
    with pytest.raises(ValueError, match="batch_index"):
        MIXER.draw(0, -1, [0])
