"""All-layer feature extraction: the cache holds exactly what the encoder gives each utterance
alone, with frame-centre phone labels; re-runs reuse it; an interrupted run leaves no
complete-looking cache and resumes per batch."""

import dataclasses
import functools
import os
from typing import Optional

import jax
import numpy as np
import pytest
import transformers

from speechmi_jax import frames
from speechmi_jax.data import phones
from speechmi_jax.data.corpus import load_corpus
from speechmi_jax.encoders import wav2vec2
from speechmi_jax.encoders.base import Encoder
from speechmi_jax.encoders.registry import load_encoder
from speechmi_jax.features import cache_key, extract_features, feature_cache_key, load_features


@pytest.fixture(scope="module")
def corpus():
    c = load_corpus("bundled")
    by_split = {}
    for u in c:
        by_split.setdefault(u.split, set()).add(u.metadata["prompt"])
    keep = {sorted(by_split[s])[0] for s in ("train", "test")}  # 2 prompts x 6 speakers
    return c.filter(lambda u: u.metadata["prompt"] in keep)


@pytest.fixture(scope="module")
def tiny_hubert():
    # A small HuBERT: conv stem with the standard 320-sample hop, 2 transformer layers.
    config = transformers.HubertConfig(
        conv_dim=(16, 16, 16), conv_kernel=(10, 8, 4), conv_stride=(5, 8, 8), hidden_size=32,
        num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    arch = wav2vec2.arch_from_config(config)
    params = jax.jit(functools.partial(wav2vec2.init_params, arch))(jax.random.PRNGKey(0))
    return wav2vec2.make_encoder(arch, params, name="tiny-hubert", config=config)


@dataclasses.dataclass
class CountingEncoder(Encoder):
    """The same encoder, recording each forward call's input shape; ``fail_after`` calls
    raise KeyboardInterrupt (an interrupted extraction)."""

    calls: list = dataclasses.field(default_factory=list)
    fail_after: Optional[int] = None

    def __call__(self, waveforms, lengths):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls.append(np.shape(waveforms))
        return super().__call__(waveforms, lengths)


def _counting(enc, fail_after=None):
    fields = {f.name: getattr(enc, f.name) for f in dataclasses.fields(Encoder)}
    counting = CountingEncoder(**fields, fail_after=fail_after)
    return counting, counting.calls


def _check_against_single_utterances(fs, enc, corpus):
    assert fs.num_layers == enc.num_layers + 1 and fs.hidden.shape[2] == enc.hidden_size
    assert fs.hidden.dtype == np.float16 and isinstance(fs.hidden, np.memmap)
    by_id = {u.id: u for u in corpus}
    assert sorted(fs.utt_ids) == sorted(by_id)
    lengths = [by_id[i].num_samples for i in fs.utt_ids]
    run_alone = {int(np.argmin(lengths)), int(np.argmax(lengths)), len(lengths) // 2}
    for u_i, uid in enumerate(fs.utt_ids):
        u = by_id[uid]
        a, b = fs.utt_offsets[u_i], fs.utt_offsets[u_i + 1]
        n = int(enc.num_frames([u.num_samples])[0])
        assert b - a == n
        assert np.all(fs.utt_index[a:b] == u_i)
        assert fs.speakers[u_i] == u.speaker and fs.splits[u_i] == u.split
        assert fs.speaker_set[fs.speaker[u_i]] == u.speaker
        if u_i in run_alone:  # (each distinct length compiles once: a few suffice)
            alone = np.asarray(enc(u.audio[None], [u.num_samples]).hidden_states)[:, 0, :n]
            got = np.asarray(fs.hidden[:, a:b], np.float32)
            # float16 storage: relative error <= 2^-11 of each value.
            np.testing.assert_allclose(got, alone, rtol=2e-3, atol=2e-3 * np.abs(alone).max())
        want = frames.segments_to_frame_labels(u.phones, n, enc.frame_rate, enc.frame_offset_s,
                                               phones.PHONE_TO_ID)
        np.testing.assert_array_equal(fs.phone[a:b], want)


def test_features_match_single_utterance_runs(corpus, tiny_hubert, tmp_path):
    enc, calls = _counting(tiny_hubert)
    fs = extract_features(enc, corpus, tmp_path, batch_size=4, progress=False)
    assert len(calls) == -(-len(corpus) // 4)  # length-bucketed batches of <= 4
    _check_against_single_utterances(fs, tiny_hubert, corpus)
    labelled = fs.phone >= 0
    assert labelled.mean() > 0.95  # the bundled alignments cover the audio
    # Re-run: same cache, no encoder call.
    fs2 = extract_features(enc, corpus, tmp_path, batch_size=4, progress=False)
    assert fs2.path == fs.path and len(calls) == -(-len(corpus) // 4)
    # Splits are contiguous views; pooled = mean of each utterance's frames.
    for s in corpus.splits:
        sub = fs.split(s)
        assert set(sub.splits) == {s} and sub.utt_offsets[0] == 0
        pooled = sub.pooled()
        a, b = sub.utt_offsets[0], sub.utt_offsets[1]
        np.testing.assert_allclose(pooled[:, 0], np.asarray(sub.hidden[:, a:b], np.float32)
                                   .mean(1), rtol=1e-5, atol=1e-6)
        assert pooled.shape == (fs.num_layers, sub.num_utterances, fs.hidden.shape[2])
    # Another corpus, other parameters or other options -> another cache key.
    opts = dict(dtype="float16", label="frame-centre")
    key = cache_key(tiny_hubert, corpus, opts)
    assert fs.path.name == key == fs.key == feature_cache_key(tiny_hubert, corpus)
    assert load_features(fs.path).key == key
    fewer = corpus.filter(lambda u: u.speaker != "kal")
    assert cache_key(tiny_hubert, fewer, opts) != key
    other = dataclasses.replace(tiny_hubert, params=jax.tree.map(lambda x: x + 1e-3,
                                                                 tiny_hubert.params))
    assert cache_key(other, corpus, opts) != key
    assert cache_key(tiny_hubert, corpus, dict(opts, dtype="float32")) != key


def _entries(cache):
    """A cache folder's entries (without the ``<key>.lock`` file beside each)."""
    return [e for e in os.listdir(cache) if not e.endswith(".lock")]


def test_interrupted_extraction_resumes(corpus, tmp_path):
    enc = load_encoder("mfcc")
    full = extract_features(enc, corpus, tmp_path / "clean", batch_size=3, progress=False)
    broken, _ = _counting(enc, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        extract_features(broken, corpus, tmp_path / "c", batch_size=3, progress=False)
    entries = _entries(tmp_path / "c")
    assert len(entries) == 1 and entries[0].endswith(".partial")  # nothing looks complete
    counting, calls = _counting(enc)
    resumed = extract_features(counting, corpus, tmp_path / "c", batch_size=3, progress=False)
    n_batches = -(-len(corpus) // 3)
    assert len(calls) == n_batches - 2  # only the batches not written before the interruption
    assert _entries(tmp_path / "c") == [resumed.path.name]
    np.testing.assert_array_equal(np.asarray(resumed.hidden), np.asarray(full.hidden))
    np.testing.assert_array_equal(resumed.phone, full.phone)
    _check_against_single_utterances(load_features(resumed.path), enc, corpus)


def test_corpus_at_another_rate_is_resampled_and_logged(corpus, tmp_path, caplog):
    enc, calls = _counting(load_encoder("mfcc"))
    fs16 = extract_features(enc, corpus, tmp_path, batch_size=8, progress=False)
    n_calls = len(calls)
    at8k = corpus.with_sample_rate(8000)
    assert at8k.sample_rate == 8000 and at8k[0].audio.shape[0] == at8k[0].num_samples
    with caplog.at_level("WARNING", logger="speechmi_jax.data"):
        fs = extract_features(enc, at8k, tmp_path, batch_size=8, progress=False)
    assert "resampled to 16000 Hz" in caplog.text
    # Read back at 16 kHz from the files' native rates: the very same corpus, so the cache
    # is reused without any encoder call.
    assert fs.path == fs16.path and len(calls) == n_calls
    assert feature_cache_key(enc, at8k) == fs16.key  # the key is computed without extracting
