"""Checkpoint resolution and reading: bad checkpoints fail with errors that name what is wrong."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

import speechmi_jax as smi
from speechmi_jax.encoders import checkpoint, wav2vec2
from wav2vec2_testing import tiny_config, torch_hidden_states, torch_model

SAMPLES = 1600


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny HuBERT checkpoint (safetensors) and its PyTorch model."""
    model = torch_model(tiny_config("hubert"), "HubertForCTC")
    path = tmp_path_factory.mktemp("hubert")
    model.save_pretrained(path)
    return model, path


def _copy_with(src, dst, state):
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    save_file(state, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def _params_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(
        __import__("jax").tree.leaves(a.params), __import__("jax").tree.leaves(b.params)))


def test_task_heads_are_dropped_and_reported(tiny, caplog):
    _, path = tiny
    with caplog.at_level(logging.WARNING, logger="speechmi_jax.encoders.wav2vec2"):
        smi.load_encoder(path)
    # the CTC head is dropped; the mask embedding is kept (the masked-view hook uses it)
    assert "lm_head.weight" in caplog.text and "masked_spec_embed" not in caplog.text


def test_missing_key_names_key_and_shape(tiny, tmp_path):
    _, path = tiny
    state = load_file(path / "model.safetensors")
    del state["hubert.encoder.layers.1.feed_forward.output_dense.bias"]
    bad = _copy_with(path, tmp_path / "bad", state)
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"missing key 'encoder\.layers\.1\.feed_forward\.output_dense\.bias' "
                             r"\(expected shape \(32,\)\)"):
        smi.load_encoder(bad)


def test_wrong_shape_names_key_and_both_shapes(tiny, tmp_path):
    _, path = tiny
    state = load_file(path / "model.safetensors")
    state["hubert.encoder.layers.0.attention.q_proj.weight"] = np.zeros((32, 16), np.float32)
    bad = _copy_with(path, tmp_path / "bad", state)
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"'encoder\.layers\.0\.attention\.q_proj\.weight' has shape \(32, 16\), "
                             r"expected \(32, 32\)"):
        smi.load_encoder(bad)


def test_unexpected_backbone_key_is_an_error(tiny, tmp_path):
    _, path = tiny
    state = load_file(path / "model.safetensors")
    state["hubert.encoder.layers.7.layer_norm.weight"] = np.ones(32, np.float32)
    bad = _copy_with(path, tmp_path / "bad", state)
    with pytest.raises(checkpoint.CheckpointError, match=r"unexpected key 'encoder\.layers\.7\.layer_norm"):
        smi.load_encoder(bad)


def test_unknown_model_type(tiny, tmp_path):
    _, path = tiny
    config = json.loads((path / "config.json").read_text())
    config["model_type"] = "bert"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type 'bert' is not supported"):
        smi.load_encoder(bad)
    from transformers import BertConfig
    with pytest.raises(ValueError, match="'bert' is not a wav2vec 2.0 family model"):
        wav2vec2.arch_from_config(BertConfig())


def test_pickle_needs_opt_in_and_then_matches_safetensors(tiny, tmp_path):
    model, path = tiny
    pkl = tmp_path / "pkl"
    pkl.mkdir()
    (pkl / "config.json").write_text((path / "config.json").read_text())
    torch.save(model.state_dict(), pkl / "pytorch_model.bin")
    with pytest.raises(PermissionError, match=r"pytorch_model\.bin.*allow_pickle=True"):
        smi.load_encoder(pkl)
    enc = smi.load_encoder(pkl, allow_pickle=True)
    assert _params_equal(enc, smi.load_encoder(path))


def test_no_weights_at_all(tiny, tmp_path):
    _, path = tiny
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no weights found"):
        smi.load_encoder(tmp_path)


def test_sharded_safetensors(tiny, tmp_path):
    _, path = tiny
    state = load_file(path / "model.safetensors")
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, names in shards.items():
        save_file({k: state[k] for k in names}, tmp_path / name, metadata={"format": "pt"})
    index = {"weight_map": {k: name for name, names in shards.items() for k in names}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    read = checkpoint.read_state_dict(tmp_path)
    assert sorted(read) == keys and all(np.array_equal(read[k], state[k]) for k in keys)


def _write_hub_cache(cache, repo_id, src, commit="0123456789abcdef0123456789abcdef01234567"):
    """The huggingface_hub cache layout: models--owner--name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((src / name).read_bytes())


def test_hub_id_resolves_through_the_local_cache(tiny, tmp_path, monkeypatch):
    model, path = tiny
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _write_hub_cache(tmp_path, "someone/tiny-hubert", path)
    resolved = checkpoint.resolve("someone/tiny-hubert")
    assert resolved.parent.parent.name == "models--someone--tiny-hubert"
    enc = smi.load_encoder("someone/tiny-hubert")
    x = np.random.default_rng(0).standard_normal((1, SAMPLES)).astype(np.float32)
    ref = torch_hidden_states(model, x[0])
    assert np.abs(np.asarray(enc(x, [SAMPLES]).hidden_states[:, 0]) - ref).max() <= 1e-4


def test_hub_id_not_cached_offline_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"facebook/hubert-base-ls960: not a local directory and "
                                                r"not in the Hugging Face cache .*HF_HUB_OFFLINE=1"):
        smi.load_encoder("facebook/hubert-base-ls960")
    # even with downloads allowed, offline mode never reaches the network
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
        checkpoint.resolve("facebook/hubert-base-ls960", allow_download=True)


def test_missing_local_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        checkpoint.resolve(tmp_path / "nope" / "deeper")


def test_check_state_dict_lists_every_problem():
    expected = {"a": (2,), "b": (3, 4), "c": (1,)}
    found = {"a": np.zeros(2), "b": np.zeros((4, 3)), "d": np.zeros(5)}
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.check_state_dict(expected, found, "ckpt")
    text = str(err.value)
    assert "ckpt" in text and "missing key 'c' (expected shape (1,))" in text
    assert "unexpected key 'd' (shape (5,))" in text and "'b' has shape (4, 3), expected (3, 4)" in text


def test_broken_config_and_garbage_weights_name_the_file(tiny, tmp_path):
    _, path = tiny
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "hubert", ')  # cut short
    with pytest.raises(checkpoint.CheckpointError, match=r"broken/config.json: not valid JSON"):
        smi.load_encoder(broken)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text((path / "config.json").read_text())
    (garbage / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"garbage/model.safetensors: not a readable safetensors file"):
        smi.load_encoder(garbage)
