"""The masked view: each encoder family's masking hook, the deterministic spans, the cached
masked feature pass and the ``codes_masked`` measure.

Parity tolerance: max abs error <= 1e-4 in float32 against transformers' ``mask_time_indices``
(as the unmasked parity tests in test_wav2vec2_parity.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import speechmi_jax as smi
from speechmi_jax import features
from speechmi_jax.encoders import audio_features as af
from wav2vec2_testing import backbone, tiny_config, torch_model

ATOL = 1e-4
SAMPLES = 1600  # 79 frames with the tiny stem


def _noise(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _span_mask(t: int, spans) -> np.ndarray:
    m = np.zeros(t, bool)
    for a, b in spans:
        m[a:b] = True
    return m


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm", "data2vec-audio"])
def test_masked_pass_matches_transformers_mask_time_indices(family, tmp_path):
    model = torch_model(tiny_config(family))
    model.save_pretrained(tmp_path)
    enc = smi.load_encoder(tmp_path)
    x = _noise((1, SAMPLES))
    mask = _span_mask(79, [(5, 15), (40, 52)])[None]
    ours = np.asarray(enc.apply_masked(x, np.array([SAMPLES]), mask).hidden_states[:, 0])
    with torch.no_grad():
        out = backbone(model)(torch.from_numpy(x), mask_time_indices=torch.from_numpy(mask),
                              output_hidden_states=True)
    ref = np.stack([h[0].numpy() for h in out.hidden_states[:-1]] + [out.last_hidden_state[0].numpy()])
    err = np.abs(ours - ref).max()
    assert err <= ATOL, f"{family}: max abs error {err}"
    clean = np.asarray(enc(x, np.array([SAMPLES])).hidden_states[:, 0])
    # the mask did something at every masked frame (so the parity is not clean vs clean)
    assert np.abs(clean - ours)[0, mask[0]].max(axis=-1).min() > 1e-3


def test_checkpoint_without_mask_embedding_has_no_hook(tmp_path):
    model = torch_model(tiny_config("wav2vec2", mask_time_prob=0.0, mask_feature_prob=0.0))
    assert not hasattr(backbone(model), "masked_spec_embed")
    model.save_pretrained(tmp_path)
    enc = smi.load_encoder(tmp_path)
    with pytest.raises(ValueError, match="no masking hook"):
        enc.apply_masked(_noise((1, SAMPLES)), np.array([SAMPLES]), np.zeros((1, 79), bool))
    with pytest.raises(ValueError, match="no masking hook"):
        features.extract_features(enc, smi.load_corpus("bundled"), tmp_path / "cache",
                                  masking=features.Masking(0.2, 0.3, 0), progress=False)


def test_log_mel_encoders_mask_their_input_frames():
    lengths = np.array([16000, 9000])
    x = 0.1 * _noise((2, 16000), seed=1)
    logmel = smi.load_encoder("logmel")
    mask = np.stack([_span_mask(100, [(10, 30)]), _span_mask(100, [(20, 35)])])
    clean = np.asarray(logmel(x, lengths).hidden_states[0])
    masked = np.asarray(logmel.apply_masked(x, lengths, mask).hidden_states[0])
    # masked frames: the one constant (0 = MASKED_LOG10_MEL normalised); the rest untouched
    assert np.all(masked[mask] == (af.MASKED_LOG10_MEL + 4.0) / 4.0)
    np.testing.assert_array_equal(masked[~mask], clean[~mask])
    assert np.abs(clean[mask]).min() > 0.0

    whisper = smi.load_encoder("random:whisper-tiny", window_seconds=2.0)  # one 2 s window
    wmask = np.stack([_span_mask(50, [(5, 15)]), _span_mask(50, [(25, 28)])])
    a = np.asarray(whisper(x, lengths).hidden_states)
    b = np.asarray(whisper.apply_masked(x, lengths, wmask).hidden_states)
    changed = np.abs(a - b)[0].max(axis=-1)  # [B, T] at the conv output (layer 0)
    assert changed[wmask].min() > 1e-3
    # layer 0 is local (two 3-wide convs): frames two or more away from a span are unchanged
    far = ~np.stack([np.convolve(m, np.ones(5), "same") > 0 for m in wmask])
    assert changed[far].max() < 1e-5

    with pytest.raises(ValueError, match=r"frame_mask has shape \(2, 7\)"):
        logmel.apply_masked(x, lengths, np.zeros((2, 7), bool))


def test_spans_are_deterministic_and_exact():
    m = features.Masking(span_s=0.2, fraction=0.3, seed=0)
    assert m.span_frames(50.0) == 10 and m.span_frames(100.0) == 20
    a = m.frames("utt-a", 200, 50.0)
    assert a.sum() == 60  # round(0.3 * 200 / 10) = 6 spans of 10
    starts = np.flatnonzero(np.diff(np.concatenate([[0], a.astype(int)])) == 1)
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], a.astype(int), [0]]))))[::2]
    assert len(starts) <= 6 and runs.sum() == 60 and np.all(runs % 10 == 0)
    np.testing.assert_array_equal(a, m.frames("utt-a", 200, 50.0))
    assert not np.array_equal(a, m.frames("utt-b", 200, 50.0))
    assert not np.array_equal(a, features.Masking(0.2, 0.3, 1).frames("utt-a", 200, 50.0))
    assert m.frames("short", 9, 50.0).sum() == 0
    with pytest.raises(ValueError, match="fraction"):
        features.Masking(0.2, 1.5, 0)


def test_masked_feature_pass_keeps_the_masked_frames(tmp_path):
    corpus = smi.load_corpus("bundled")
    corpus = corpus.filter(lambda u: u.id in {v.id for v in corpus.utterances[:5]})
    enc = smi.load_encoder("logmel")
    masking = features.Masking(0.2, 0.3, 0)
    clean = features.extract_features(enc, corpus, tmp_path, progress=False)
    masked = features.extract_features(enc, corpus, tmp_path, masking=masking, progress=False)
    assert masked.key != clean.key == features.feature_cache_key(enc, corpus)
    assert masked.key == features.feature_cache_key(enc, corpus, masking=masking)
    want = np.concatenate([masking.frames(uid, int(n), enc.frame_rate)
                           for uid, n in zip(clean.utt_ids, np.diff(clean.utt_offsets))])
    np.testing.assert_array_equal(masked.frame_index, np.flatnonzero(want))
    np.testing.assert_array_equal(masked.utt_index, clean.utt_index[masked.frame_index])
    np.testing.assert_array_equal(masked.phone, clean.phone[masked.frame_index])
    assert masked.num_frames == want.sum() > 0
    assert np.all(np.asarray(masked.hidden) == 0.0)  # the log-mel of a masked frame: a constant
    assert features.load_features(masked.path).frame_index is not None  # reopened from the cache


def test_the_masked_pass_keys_only_the_measures_that_read_it(tmp_path):
    """The features stage keys a ``needs_masked`` measure's part by the masked pass (spans and
    the mask embedding added to the clean key), so a changed masking setting recomputes it and
    nothing else; without such a measure no masked key is made."""
    from speechmi_jax import pipeline
    from speechmi_jax.configs import base
    corpus = smi.load_corpus("bundled")
    enc = smi.load_encoder("logmel")

    def keys(measures, **views):
        c = base.base_config()
        c.measures = measures
        c.views.update(views)
        stage = pipeline.FeatureStage(corpus, tmp_path, base.validate(c), progress=False)
        return stage, stage.part_keys(enc)

    stage, a = keys(["phone", "codes_masked"])
    masking = features.Masking(stage.config.views.masked_span_s,
                               stage.config.views.masked_fraction, stage.config.seed)
    assert a["codes_masked"]["features"] == features.feature_cache_key(enc, corpus, masking=masking)
    assert a["phone"]["features"] == features.feature_cache_key(enc, corpus)
    _, b = keys(["phone", "codes_masked"], masked_fraction=0.4)
    assert b["phone"] == a["phone"] and b["codes_masked"]["features"] != a["codes_masked"]["features"]
    assert keys(["phone"])[0].masking is None


def test_codes_masked_in_a_pipeline_run_needs_context(tmp_path):
    """A tiny run of the measure: every bound lies in [0, H(codes)]; the log-mel baseline, whose
    masked frames are one constant, reads ~0 (it would read > 1 bit if the mask were not
    applied: a log-mel frame predicts its own window's code), while a model trained to fill in
    masked spans (the zoo's HuBERT-style MLM) reads more from the context. Tolerances in bits."""
    from speechmi_jax import cli, pipeline
    from speechmi_jax.configs import demo
    config = cli.load_config(demo.__file__, [
        "encoders=['logmel','melhubert-4x256']", "max_utterances_per_split=20",
        "measures=['codes_masked']", "progress=False", "probe.steps=40", "probe.l2=(1e-2,)",
        "probe.num_bootstrap=50", "views.num_codes=8", "max_train_frames=0"])
    res = pipeline.run_experiment(config, tmp_path / "run")
    logmel = res.get("logmel", 0, "codes_masked")
    hubert = [res.get("melhubert-4x256", l, "codes_masked") for l in res.layers("melhubert-4x256")]
    for r in [logmel, *hubert]:
        assert 0 < r.extra["ceiling"] <= 3.0 and r.extra["num_codes"] == 8  # H(8 codes) <= 3 bits
        assert -0.15 <= r.value <= r.extra["ceiling"]  # a held-out estimate: ~0 may dip below
    assert logmel.extra["span_frames"] == 20 and hubert[0].extra["span_frames"] == 10
    assert abs(logmel.value) < 0.1, logmel.value
    # measured: logmel -0.03, HuBERT layers -0.08 -0.08 0.32 0.36 bits (layer 0 sees the
    # embedding, the transformer layers the context)
    assert max(r.value for r in hubert) > logmel.value + 0.2, [r.value for r in hubert]


def test_config_refuses_bad_mask_settings():
    from speechmi_jax.configs import base
    for key, value in (("masked_fraction", 1.5), ("masked_fraction", 0.0), ("masked_span_s", 0.0)):
        c = base.base_config()
        c.views[key] = value
        with pytest.raises(base.ConfigError, match=f"views.{key}"):
            base.validate(c)
