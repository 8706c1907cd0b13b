"""The demo's procedural world, its measurements and its text encoder."""

import chex
import numpy as np
import pytest

from hcjax.demo import measure, world
from hcjax.demo.text import TEXT_DIM, TEXT_LEN, DemoTextEncoder


def test_held_out_split_keeps_every_pair_in_training():
    held, train = world.combinations("held_out"), world.combinations("train")
    assert len(held) == 16 and len(train) == 80 and not set(held) & set(train)
    for c in world.COLOURS:
        for s in world.SHAPES:
            assert sum((c, s, d) in train for d in world.DIRECTIONS) >= 3
    assert all(not world.held_out(*sc.combination) for sc in world.scenes("train", 40, 3))
    with pytest.raises(ValueError, match="train or held_out"):
        world.combinations("test")


def test_scenes_and_renders_are_reproducible():
    a, b = world.scenes("train", 3, 5), world.scenes("train", 3, 5)
    assert a == b and a != world.scenes("train", 3, 6)
    video = world.render_video(a[0])
    chex.assert_shape(video, (world.FRAMES, world.SIZE, world.SIZE, 3))
    np.testing.assert_array_equal(video, world.render_video(b[0]))
    np.testing.assert_array_equal(video[4:9], world.render_video(a[0], range(4, 9)))
    assert world.caption(a[0]).startswith(f"a {a[0].colour} ")


def test_the_path_is_set_by_the_direction():
    """Every path crosses the frame's middle in the caption's direction, at most JITTER off along and across."""
    for scene in world.scenes("train", 24, 1):
        first, middle, last = (np.array(world.centre_at(scene, f)) for f in (0, world.FRAMES // 2, world.FRAMES - 1))
        np.testing.assert_allclose(last - first, world.TRAVEL * np.array(world.DIRECTIONS[scene.direction]))
        assert np.abs(middle - world.SIZE / 2).max() <= world.JITTER


def test_measurements_read_the_ground_truth_and_reject_noise():
    scenes = world.scenes("held_out", 8, 0)
    scores = measure.score(np.stack([world.render_video(s) for s in scenes]), scenes)
    assert scores["colour_accuracy"] == scores["direction_accuracy"] == scores["shape_accuracy"] == 1.0
    assert scores["identity_similarity"] > 0.9 and scores["temporal_consistency"] > 0.9
    noise = np.random.default_rng(0).integers(0, 256, (2, world.FRAMES, world.SIZE, world.SIZE, 3), dtype=np.uint8)
    scores = measure.score(noise, scenes[:2])
    assert scores["colour_accuracy"] == scores["direction_accuracy"] == scores["identity_similarity"] == 0.0
    # a subject shown moving the other way is scored wrong
    flipped = [world.render_video(s)[::-1] for s in scenes[:4]]
    assert measure.score(np.stack(flipped), scenes[:4])["direction_accuracy"] == 0.0


def test_loudness_drives_the_subject_size():
    scene = world.scenes("train", 1, 11)[0]
    audio = world.render_audio(scene)
    assert len(audio) == world.FRAMES * world.SAMPLE_RATE // world.FPS
    np.testing.assert_allclose(world.loudness_of_audio(audio), scene.loudness, atol=1e-3)
    area = measure.subject_masks(world.render_video(scene)).sum((1, 2))
    assert np.corrcoef(area, scene.loudness)[0, 1] > 0.95


def test_text_encoder():
    enc = DemoTextEncoder()
    t = enc.encode(["a red star moving left on a dark background", "", "a red zebra"])
    chex.assert_shape(t.states, (3, TEXT_LEN, TEXT_DIM))
    np.testing.assert_array_equal(t.mask.sum(1), [10, 1, 4])
    assert enc.unknown("a red zebra") == ["zebra"]
    np.testing.assert_array_equal(t.states, DemoTextEncoder().encode(
        ["a red star moving left on a dark background", "", "a red zebra"]).states)
    moved = enc.encode(["a star red"])   # the same words in another order differ by their positions
    assert not np.allclose(moved.states[0, 1:4], enc.encode(["a red star"]).states[0, 1:4])
