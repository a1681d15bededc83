"""Shared audio features and the log-mel / MFCC baseline encoders.

References: transformers' numpy audio utilities (mel_filter_bank, WhisperFeatureExtractor),
numpy's FFT in float64, scipy's orthonormal DCT-II, and the closed form of regression deltas.
"""

import numpy as np
import pytest
import jax.numpy as jnp

import speechmi_jax as smi
from speechmi_jax.encoders import audio_features as af


def test_mel_filterbank_matches_transformers():
    audio_utils = pytest.importorskip("transformers.audio_utils")
    ref = audio_utils.mel_filter_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0,
                                      max_frequency=8000.0, sampling_rate=16000, norm="slaney",
                                      mel_scale="slaney")
    np.testing.assert_allclose(af.mel_filterbank(80), ref, atol=1e-9, rtol=1e-6)


def test_power_spectrogram_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(3210)
    p = np.asarray(af.power_spectrogram(jnp.asarray(x[None], jnp.float32), jnp.asarray([3210])))
    assert p.shape == (1, 21, 201)  # ceil(3210 / 160)
    padded = np.concatenate([x[1:201][::-1], x, np.zeros(200)])
    frames = np.stack([padded[i * 160:i * 160 + 400] for i in range(21)]) * np.hanning(401)[:-1]
    ref = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    np.testing.assert_allclose(p[0], ref, rtol=1e-3, atol=1e-3 * ref.max())


def test_whisper_log_mel_matches_feature_extractor():
    transformers = pytest.importorskip("transformers")
    rng = np.random.default_rng(1)
    wav = (0.05 * rng.standard_normal(24000)).astype(np.float32)
    ref = transformers.WhisperFeatureExtractor()([wav], sampling_rate=16000, return_tensors="np").input_features
    x = np.zeros((1, 480000), np.float32)
    x[0, :24000] = wav
    mel = np.asarray(af.whisper_log_mel(jnp.asarray(x), jnp.asarray([24000])))
    np.testing.assert_allclose(mel[0].T, ref[0], atol=1e-4, rtol=0)
    # The logmel baseline is the same function on the utterance alone: its 150 frames agree.
    out = smi.load_encoder("logmel")(wav[None], [24000])
    assert out.hidden_states.shape == (1, 1, 150, 80)
    np.testing.assert_allclose(np.asarray(out.hidden_states)[0, 0].T, ref[0, :, :150], atol=1e-4, rtol=0)


def test_mfcc_and_deltas_closed_form():
    from scipy.fft import dct
    rng = np.random.default_rng(2)
    wav = rng.standard_normal(8000).astype(np.float32)
    enc = smi.load_encoder("mfcc")
    assert (enc.num_layers, enc.hidden_size, enc.frame_rate, enc.frame_offset_s) == (0, 39, 100.0, 0.0)
    feats = np.asarray(enc(wav[None], [8000]).hidden_states)[0, 0]  # [50, 39]
    power = np.asarray(af.power_spectrogram(jnp.asarray(wav[None]), jnp.asarray([8000])))[0]
    ln_mel = np.log(np.maximum(power.astype(np.float64) @ af.mel_filterbank(80), 1e-10))
    c = dct(ln_mel, type=2, norm="ortho", axis=-1)[:, :13]
    np.testing.assert_allclose(feats[:, :13], c, atol=1e-3, rtol=1e-4)

    def delta(v):
        pad = np.concatenate([v[:1], v[:1], v, v[-1:], v[-1:]])
        return (pad[3:-1] - pad[1:-3] + 2 * (pad[4:] - pad[:-4])) / 10.0
    np.testing.assert_allclose(feats[:, 13:26], delta(c), atol=1e-3)
    np.testing.assert_allclose(feats[:, 26:], delta(delta(c)), atol=1e-3)


@pytest.mark.parametrize("name", ["logmel", "mfcc"])
def test_baseline_padding_invariance(name):
    enc = smi.load_encoder(name)
    rng = np.random.default_rng(3)
    lengths = np.array([4000, 9001, 6399])
    x = np.zeros((3, 12000), np.float32)
    for i, n in enumerate(lengths):
        x[i, :n] = rng.standard_normal(n)
    x[0, 4000:] = 5.0  # garbage past the length must be ignored
    out = enc(x, lengths)
    hs, mask = np.asarray(out.hidden_states), np.asarray(out.mask)
    assert hs.shape == (1, 3, 75, enc.hidden_size)
    np.testing.assert_array_equal(mask.sum(1), enc.num_frames(lengths))
    np.testing.assert_array_equal(enc.num_frames(lengths), [25, 57, 40])
    for i, n in enumerate(lengths):
        alone = np.asarray(enc(x[i:i + 1, :n], [n]).hidden_states)[0, 0]
        np.testing.assert_allclose(hs[0, i, :len(alone)], alone, atol=1e-4, rtol=1e-5)
        assert np.all(hs[0, i, len(alone):] == 0)
