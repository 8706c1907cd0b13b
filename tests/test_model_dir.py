"""Model directories: exact round trip, missing parts, and refusals that leave the disk untouched."""

import json

import jax
import numpy as np
import pytest

from hcjax import configs
from hcjax.convert import ModelDirError, is_model_dir, load_model_dir, read_model_info, save_model_dir
from hcjax.convert import model_dir
from hcjax.models import random_params


@pytest.fixture(scope="module")
def params():
    preset = configs.get("tiny")
    return random_params(preset.dit, 0), random_params(preset.vae, 1)


def assert_trees_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_round_trip(tmp_path, params):
    dit, vae = params
    dst = tmp_path / "model"
    save_model_dir(dst, "tiny", dit, vae, source="unit test")
    assert is_model_dir(dst) and not is_model_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary sibling left
    info = read_model_info(dst)
    assert (info["format"], info["version"], info["preset"], info["parts"], info["source"]) == \
        ("hcjax-model", 1, "tiny", ["dit", "vae"], "unit test")
    preset, dit2, vae2 = load_model_dir(dst)
    assert preset.name == "tiny"
    assert_trees_equal(dit2, dit)
    assert_trees_equal(vae2, vae)


def test_numpy_params_and_empty_target_dir(tmp_path, params):
    dit = jax.tree.map(np.asarray, params[0])
    (tmp_path / "m").mkdir()
    save_model_dir(tmp_path / "m", "tiny", dit_params=dit)
    assert_trees_equal(load_model_dir(tmp_path / "m", parts=("dit",))[1], dit)


def test_missing_part(tmp_path, params):
    save_model_dir(tmp_path / "m", "tiny", dit_params=params[0])
    assert read_model_info(tmp_path / "m")["parts"] == ["dit"]
    with pytest.raises(ModelDirError, match="--vae-src"):
        load_model_dir(tmp_path / "m", parts=("dit", "vae"))
    _, dit, vae = load_model_dir(tmp_path / "m", parts=("dit",))
    assert vae is None
    assert_trees_equal(dit, params[0])


@pytest.mark.parametrize("change", ["shape", "dtype", "missing"])
def test_bad_tree_writes_nothing(tmp_path, params, change):
    flat = model_dir._specs(params[0])
    key = sorted(flat)[0]  # "a/b/c"
    edit = {"shape": lambda x: x[..., :-1], "dtype": lambda x: x.astype(np.float16), "missing": None}[change]
    dit = jax.tree.map(np.asarray, params[0])
    *parents, name = key.split("/")
    node = dit = dict(dit)
    for k in parents:
        node[k] = dict(node[k])
        node = node[k]
    if edit is None:
        del node[name]
    else:
        node[name] = edit(node[name])
    with pytest.raises(ValueError, match=key):
        save_model_dir(tmp_path / "m", "tiny", dit, params[1])
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path, params, monkeypatch):
    real = model_dir._checkpointer

    class FailsOnVae:
        def __init__(self):
            self.ckptr = real()

        def __enter__(self):
            self.ckptr.__enter__()
            return self

        def __exit__(self, *exc):
            return self.ckptr.__exit__(*exc)

        def save(self, path, tree):
            if path.name == "vae":
                self.ckptr.wait_until_finished()  # the DiT is on disk when the failure comes
                raise OSError("disk full")
            self.ckptr.save(path, tree)

    monkeypatch.setattr(model_dir, "_checkpointer", FailsOnVae)
    with pytest.raises(OSError, match="disk full"):
        save_model_dir(tmp_path / "m", "tiny", *params)
    assert list(tmp_path.iterdir()) == []


def test_existing_dir_refused(tmp_path, params):
    dst = tmp_path / "m"
    dst.mkdir()
    (dst / "keep.txt").write_text("precious")
    with pytest.raises(ModelDirError, match="--dst") as e:
        save_model_dir(dst, "tiny", params[0])
    assert str(dst) in str(e.value)
    assert [p.name for p in dst.iterdir()] == ["keep.txt"] and (dst / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize("content", [None, "{not json", json.dumps({"format": "other"}),
                                     json.dumps({"format": "hcjax-model", "version": 2}),
                                     json.dumps({"format": "hcjax-model", "version": 1, "preset": "nope",
                                                 "parts": ["dit"]}),
                                     json.dumps({"format": "hcjax-model", "version": 1, "preset": "tiny",
                                                 "parts": ["dit", "text"]})])
def test_bad_info(tmp_path, content):
    dst = tmp_path / "m"
    dst.mkdir()
    if content is not None:
        (dst / "hcjax_model.json").write_text(content)
    for fn in (read_model_info, load_model_dir):
        with pytest.raises(ModelDirError, match=str(dst)):
            fn(dst)


def test_damaged_checkpoint(tmp_path, params):
    save_model_dir(tmp_path / "m", "tiny", dit_params=params[0])
    info = json.loads((tmp_path / "m" / "hcjax_model.json").read_text())
    (tmp_path / "m" / "hcjax_model.json").write_text(json.dumps({**info, "parts": ["dit", "vae"]}))
    with pytest.raises(ModelDirError, match="vae"):
        load_model_dir(tmp_path / "m")


def test_stored_shapes_checked_on_load(tmp_path, params):
    """Orbax would restore a wrong-shaped array into the target silently; load_model_dir refuses it."""
    import orbax.checkpoint as ocp

    save_model_dir(tmp_path / "m", "tiny", dit_params=params[0])
    key = sorted(model_dir._specs(params[0]))[-1]
    bad = jax.tree_util.tree_map_with_path(
        lambda p, x: np.asarray(x)[..., :1] if "/".join(k.key for k in p) == key else np.asarray(x), params[0])
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp_path / "m" / "dit", bad, force=True)
    with pytest.raises(ModelDirError, match=key):
        load_model_dir(tmp_path / "m", parts=("dit",))
