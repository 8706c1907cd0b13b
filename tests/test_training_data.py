"""The training data layer: TFDS ArrayRecord round trip, bucketed and host-sharded batches, exact resume from
the iterator's JSON state (across an epoch boundary), the synthetic source, record checks, and
tools/precompute_dataset.py end to end on tiny generated videos."""

import functools
import json
import os
import sys

import chex
import jax
import numpy as np
import pytest

from hcjax import configs
from hcjax.io import image_to_unit_range, read_video, resize_center_crop, write_mp4
from hcjax.pipelines import text_inputs
from hcjax.training.data import (DataSpec, InMemorySource, SyntheticSource, check_dataset, make_dataset,
                                 make_iterator, open_dataset, read_metadata)
from hcjax.training.tfds_builder import write_dataset

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import precompute_dataset  # noqa: E402

SHAPES = ((1, 2, 4), (2, 4, 2), (3, 2, 2))
SPEC = DataSpec(4, 8, 6, 3, scaling_factor=0.5, extra=(("record_id", (1,), "int32"),))


def _records(n=24, shapes=SHAPES, seed=0):
    """``n`` records with distinct values and a ``record_id`` extra key; record ``i`` has shape ``shapes[i % S]``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        mask = (np.arange(8) < 1 + i % 8).astype(np.int32)
        out.append({"latents": rng.standard_normal((*shapes[i % len(shapes)], 4)).astype(np.float32),
                    "text_states": rng.standard_normal((8, 6)).astype(np.float32),
                    "text_mask": mask, "text_pooled": rng.standard_normal(3).astype(np.float32),
                    "record_id": np.array([i], np.int32), "caption": f"clip {i} ünïcode"})
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    records = _records()
    path = write_dataset(tmp_path_factory.mktemp("data") / "clips", records, SPEC, {"source": "test"})
    return path, records


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
            assert x[k].dtype == y[k].dtype


def test_tfds_round_trip_is_exact(dataset):
    path, records = dataset
    source = open_dataset(path)
    meta = read_metadata(path)
    assert meta["spec"] == SPEC and meta["source"] == "test" and meta["num_records"] == len(records)
    assert sorted(meta["buckets"]) == sorted(SHAPES) and meta["bucket_counts"] == [8, 8, 8]
    assert len(source) == len(records)
    for i, want in enumerate(records):
        got = source.checked(i)
        assert source.buckets[source.bucket_ids[i]] == want["latents"].shape[:3]
        assert got["caption"] == want["caption"]
        for k in SPEC.arrays():
            np.testing.assert_array_equal(got[k], want[k])
            assert got[k].dtype == want[k].dtype
    check_dataset(source, text_len=8)


def test_text_stored_as_float16_reads_back_as_float32(tmp_path):
    records = _records(3, shapes=((1, 2, 2),))
    spec = DataSpec(4, 8, 6, 3, text_dtype="float16", extra=SPEC.extra)
    source = open_dataset(write_dataset(tmp_path / "half", records, spec))
    assert not hasattr(source, "null_text")                          # none stored
    got = source.checked(2)["text_states"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, records[2]["text_states"].astype(np.float16).astype(np.float32))
    records[0]["text_states"][0, 0] = 1e6
    with pytest.raises(ValueError, match="record 0: text_states exceed the float16 range.*float32"):
        write_dataset(tmp_path / "overflow", records, spec)
    bad_null = {"text_states": np.zeros((4, 6), np.float32), "text_mask": np.zeros(8, np.int32)}
    with pytest.raises(ValueError, match=r"null_text: text_states has shape \[4, 6\], needs \[8, 6\]; missing key "
                                         "'text_pooled'"):
        write_dataset(tmp_path / "null", records, spec, null_text=bad_null)
    with pytest.raises(ValueError, match="is not a dataset written by tools/precompute_dataset.py"):
        open_dataset(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["half"]                 # nothing left by the failed writes


def test_batches_hold_one_bucket_each(dataset):
    source = open_dataset(dataset[0])
    it = make_iterator(source, global_batch=4, seed=3, process_index=0, process_count=1)
    assert it.plan.batches_per_epoch == 6   # 3 buckets of 8 records, 2 batches each
    seen = []
    for batch in _take(it, 12):
        t, h, w = batch["latents"].shape[1:4]
        chex.assert_shape(batch["latents"], (4, t, h, w, 4))
        chex.assert_shape([batch["text_states"], batch["text_mask"], batch["text_pooled"]], [(4, 8, 6), (4, 8), (4, 3)])
        chex.assert_type([batch["latents"], batch["text_mask"]], [np.float32, np.int32])
        ids = batch["record_id"][:, 0]
        assert {SHAPES[i % 3] for i in ids} == {(t, h, w)}   # the records' own shapes: one bucket
        seen.append((t, h, w))
    assert sorted(seen[:6]) == sorted(SHAPES * 2) and sorted(seen[6:]) == sorted(SHAPES * 2)


def test_host_shards_are_disjoint_and_cover_each_epoch():
    records = _records(30)                  # buckets of 10: 2 global batches of 4 each, 2 records dropped
    source = InMemorySource(records, SPEC)
    for epoch in range(2):
        shares = []
        for host in range(4):
            ds, plan = make_dataset(source, global_batch=4, seed=1, process_index=host, process_count=4)
            n = plan.batches_per_epoch
            batches = [ds[k] for k in range(epoch * n, (epoch + 1) * n)]
            assert all(b["latents"].shape[0] == 1 for b in batches)
            shares.append([int(b["record_id"][0, 0]) for b in batches])
        flat = [i for s in shares for i in s]
        assert len(flat) == len(set(flat)) == 24                     # disjoint, every full batch read
        want = set(plan.epoch(epoch).ravel().tolist())
        assert set(flat) == want
        for k in range(n):                                           # hosts step through one bucket together
            assert len({SHAPES[s[k] % 3] for s in shares}) == 1
    assert set(plan.epoch(0).ravel()) != set(plan.epoch(1).ravel())  # a different remainder each epoch
    with pytest.raises(ValueError, match="split evenly over the hosts"):
        make_dataset(source, global_batch=6, seed=1, process_index=0, process_count=4)
    with pytest.raises(ValueError, match="no latent bucket holds a global batch of 16.*largest bucket: 10"):
        make_dataset(source, global_batch=16, seed=1, process_index=0, process_count=1)


@pytest.mark.parametrize("threads", [0, 2])
def test_resume_from_state_is_bit_identical_across_epochs(dataset, threads):
    source = open_dataset(dataset[0])
    kw = dict(global_batch=4, seed=7, process_index=1, process_count=2, num_threads=threads)
    whole = _take(make_iterator(source, **kw), 16)                  # 6 batches per epoch: crosses 2 boundaries
    first = make_iterator(source, **kw)
    _take(first, 5)
    state = json.loads(json.dumps(first.get_state()))
    assert state["next_batch"] == 5 and first.epoch == 0
    _take(first, 3)                                                  # run on past the saved point
    resumed = make_iterator(open_dataset(dataset[0]), **kw)
    resumed.set_state(state)
    _assert_same_batches(_take(resumed, 11), whole[5:])
    assert resumed.epoch == 2
    with pytest.raises(ValueError, match="seed 7 \\(now 8\\).*same dataset, seed and global batch"):
        make_iterator(source, **(kw | {"seed": 8})).set_state(state)
    one_host = make_iterator(source, **(kw | {"process_index": 0, "process_count": 1}))
    one_host.set_state(state)                                        # the state does not depend on the host count
    np.testing.assert_array_equal(next(one_host)["latents"][2:], whole[5]["latents"])


def test_synthetic_source_is_deterministic_and_learnable():
    kw = dict(latent_shapes=((2, 16, 16), (1, 16, 24)), num_clips=4, text_len=8, text_dim=6, pooled_dim=3)
    a, b, c = SyntheticSource(16, seed=0, **kw), SyntheticSource(16, seed=0, **kw), SyntheticSource(16, seed=1, **kw)
    check_dataset(a, text_len=8)
    assert a.buckets == ((1, 16, 24), (2, 16, 16)) and len(a) == 16
    for i in range(16):
        for k in ("latents", "text_states", "text_mask", "text_pooled"):
            np.testing.assert_array_equal(a[i][k], b[i][k])
        assert not np.array_equal(a[i]["latents"], c[i]["latents"])
        np.testing.assert_array_equal(a[i]["latents"], a[i % 4]["latents"])     # K fixed clips, repeated
    lat = a[0]["latents"]
    assert abs(lat.std() - 1) < 1e-3
    neighbour = np.abs(np.diff(lat, axis=2)).mean()
    assert neighbour < 0.3 * np.abs(lat).mean()                                   # smooth, not white noise
    pooled = np.stack([a[k]["text_pooled"] for k in range(4)])
    assert np.linalg.matrix_rank(pooled) == 3                                     # distinct text per clip
    it1, it2 = (make_iterator(s, global_batch=2, seed=5, process_index=0, process_count=1) for s in (a, b))
    _assert_same_batches(_take(it1, 10), _take(it2, 10))
    tiny = configs.get("tiny").dit
    s = SyntheticSource.for_model(tiny, 8, text_len=4)
    check_dataset(s, tiny, text_len=4)
    chex.assert_shape([s[0]["latents"], s[0]["text_states"]], [(3, 8, 12, tiny.out_channels), (4, tiny.text_dim)])


def test_malformed_records_raise_one_clear_error():
    records = _records(12, shapes=((1, 2, 2),))
    records[9]["text_states"] = records[9]["text_states"][:5]
    source = InMemorySource(records, SPEC)
    check_dataset(source, num_records=4)                             # the first records are fine
    it = make_iterator(source, global_batch=12, seed=0, process_index=0, process_count=1, num_threads=2)
    with pytest.raises(ValueError, match=r"record 9: text_states has shape \[5, 6\], needs \[8, 6\]\. Fix: "
                                         r"precompute the dataset again"):
        next(it)
    records = _records(4, shapes=((1, 2, 2),))
    del records[0]["text_pooled"]
    records[0]["text_mask"] = records[0]["text_mask"].astype(np.int64)
    with pytest.raises(ValueError, match="record 0: text_mask has dtype int64, needs int32; missing key "
                                         "'text_pooled'"):
        check_dataset(InMemorySource(records, SPEC))
    with pytest.raises(ValueError, match="does not fit the model: latent channels is 4, the model needs 16; "
                                         "text_dim is 6, the model needs 32; pooled_dim is 3, the model needs 16; "
                                         r"latent sizes \[\(1, 3, 3\)\] are not multiples"):
        check_dataset(InMemorySource(_records(2, shapes=((1, 3, 3),)), SPEC), configs.get("tiny").dit)
    with pytest.raises(ValueError, match=r"record 1: needs latents \[T, H, W, C\]"):
        InMemorySource([_records(1)[0], {"text_mask": np.zeros(8, np.int32)}], SPEC)


def _clip_folder(root, sizes=((9, 40, 64), (10, 64, 40), (9, 48, 48))):
    root.mkdir()
    rng = np.random.default_rng(0)
    for i, (f, h, w) in enumerate(sizes):
        base = rng.integers(0, 255, (1, h // 8, w // 8, 3)).repeat(8, 1).repeat(8, 2)
        frames = np.concatenate([np.roll(base, t, axis=2) for t in range(f)]).astype(np.uint8)
        write_mp4(root / f"clip{i}.mp4", frames, fps=8)
        (root / f"clip{i}.txt").write_text(f"a moving pattern number {i}\n")
    return root


@pytest.fixture(scope="module")
def precomputed(tmp_path_factory):
    """``(videos, dataset)``: three tiny clips run through the tool with the tiny preset (random VAE weights,
    placeholder text)."""
    root = tmp_path_factory.mktemp("precompute")
    src, out = _clip_folder(root / "videos"), root / "data"
    argv = ["--model", "tiny", "--src", str(src), "--out", str(out), "--buckets", "32x48,48x32", "--frames", "9,5",
            "--text-len", "16", "--text-dtype", "float32"]
    assert precompute_dataset.main(argv) == 0
    assert precompute_dataset.main(argv) == 2   # refuses to overwrite
    return src, out


def test_precompute_tool_end_to_end(precomputed):
    src, out = precomputed
    preset = configs.get("tiny")
    source = open_dataset(out)
    check_dataset(source, preset.dit, text_len=16)
    assert source.spec.scaling_factor == pytest.approx(preset.vae.scaling_factor)
    shapes = [source[i]["latents"].shape for i in range(3)]
    assert shapes == [(3, 4, 6, 16), (3, 6, 4, 16), (3, 4, 6, 16)]   # nearest aspect (tie: first listed), 9 frames
    assert [source[i]["caption"] for i in range(3)] == [f"a moving pattern number {i}" for i in range(3)]
    want_text = text_inputs.placeholder("a moving pattern number 1", 32, 16, length=16)
    np.testing.assert_array_equal(source[1]["text_states"], want_text.states[0])
    np.testing.assert_array_equal(source[1]["text_mask"], want_text.mask[0])
    null = source.null_text()                                        # the empty prompt, for text dropout
    np.testing.assert_array_equal(null["text_states"], text_inputs.placeholder("", 32, 16, length=16).states[0])
    chex.assert_shape([null["text_mask"], null["text_pooled"]], [(16,), (16,)])
    # latents: the VAE mean of the resized first 9 frames times the scaling factor (random VAE weights, seed 0)
    from hcjax.models import CausalVAE, random_params

    video = read_video(src / "clip1.mp4")[:9]
    video = image_to_unit_range(np.stack([resize_center_crop(x, 48, 32) for x in video]))
    encode = jax.jit(functools.partial(CausalVAE(preset.vae).apply, method=CausalVAE.encode))
    want = encode({"params": random_params(preset.vae, 0)}, video[None])[0] * preset.vae.scaling_factor
    np.testing.assert_allclose(source[1]["latents"], want, rtol=1e-5, atol=1e-6)
    assert sorted(os.listdir(out.parent)) == ["data", "videos"]     # no temporary folder left


def test_precompute_tool_with_a_model_directory(precomputed, tmp_path):
    """The model directory's VAE (here the same random weights as the preset run) and text encoders."""
    pytest.importorskip("transformers")
    from hcjax import convert
    from hcjax.convert.text_encoder_dir import load_text_encoders, save_text_encoders
    from hcjax.models import random_params
    from hcjax.models.text.clip import CLIPTextConfig
    from hcjax.models.text.llama import LlamaConfig
    from tests.test_encode_text_tool import _tokenizer

    preset, model = configs.get("tiny"), tmp_path / "model"
    convert.save_model_dir(model, "tiny", vae_params=random_params(preset.vae, 0))
    words = "a moving pattern number 0 1 2".split()
    llm = LlamaConfig(vocab_size=16, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4, num_kv_heads=2,
                      dtype="float32", param_dtype="float32")
    clip = CLIPTextConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_layers=2, num_heads=2,
                          eos_token_id=2)
    save_text_encoders(model, llm, random_params(llm, 2), clip, random_params(clip, 3), _tokenizer(words),
                       _tokenizer(words, bos=False))
    src, preset_out = precomputed
    out = tmp_path / "data"
    assert precompute_dataset.main(["--model", str(model), "--src", str(src), "--out", str(out), "--buckets",
                                    "32x48,48x32", "--frames", "9", "--text-len", "300"]) == 0
    got, same_vae = open_dataset(out), open_dataset(preset_out)
    assert got.spec == DataSpec(16, 300, 32, 16, preset.vae.scaling_factor, "float16")
    encoders = load_text_encoders(model)
    text = encoders.encode(["a moving pattern number 2"], 9)
    np.testing.assert_array_equal(got.null_text()["text_mask"][:256], encoders.encode([""], 9).mask[0])
    states, mask = got[2]["text_states"], got[2]["text_mask"]
    np.testing.assert_array_equal(mask[:256], text.mask[0])
    assert not mask[256:].any() and not states[256:].any()          # padded from the encoders' 256 to 300
    np.testing.assert_allclose(states[:256], text.states[0], rtol=1e-3, atol=1e-3)   # stored as float16
    np.testing.assert_allclose(got[2]["text_pooled"], text.pooled[0], rtol=1e-6)
    for i in range(3):
        np.testing.assert_array_equal(got[i]["latents"], same_vae[i]["latents"])
    s, m = precompute_dataset.fit_text(np.ones((256, 2), np.float32), np.ones(256, np.int32), 8)
    assert s.shape == (8, 2) and m.tolist() == [1] * 8


def test_precompute_tool_refuses_bad_input_before_work(tmp_path, capsys):
    src = _clip_folder(tmp_path / "videos", sizes=((9, 32, 48), (3, 32, 48)))
    (src / "clip0.txt").unlink()
    (src / "broken.mp4").write_bytes(b"not a video")
    (src / "broken.txt").write_text("broken")
    out = tmp_path / "data"
    code = precompute_dataset.main(["--model", "tiny", "--src", str(src), "--out", str(out), "--buckets", "32x48",
                                    "--frames", "9,5"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "broken.mp4: unreadable video" in err and "clip0.mp4 has no caption: write it to clip0.txt" in err
    assert "clip1.mp4 has 3 frames, fewer than the shortest of --frames (5)" in err
    assert sorted(os.listdir(tmp_path)) == ["videos"]          # no output, no temporary folder
    code = precompute_dataset.main(["--model", "tiny", "--src", str(src), "--out", str(out), "--buckets", "30x48"])
    assert code == 2 and "multiple of 16" in capsys.readouterr().err
