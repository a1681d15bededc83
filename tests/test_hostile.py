"""Hostile input at the Python API: encoder calls, encoder names and estimator inputs are
refused with a message naming the argument and what was expected, or handled exactly
(features at extreme scales). Data-file faults are in test_data_readers.py, checkpoint-file
faults in test_checkpoints.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import speechmi_jax as smi


@pytest.fixture(scope="module")
def logmel():
    return smi.load_encoder("logmel")


WAV = (0.1 * np.random.default_rng(0).standard_normal((2, 16000))).astype(np.float32)


def test_encoder_refuses_integer_waveforms(logmel):
    with pytest.raises(TypeError, match=r"waveforms has dtype int16: expected float samples in "
                                        r"\[-1, 1\] \(int16 PCM: divide by 32768 first\)"):
        logmel((WAV * 32768).astype(np.int16), [16000, 8000])


@pytest.mark.parametrize("lengths, pattern", [
    ([16000, 20000], r"lengths\[1\] = 20000: expected 0 <= length <= 16000"),
    ([-5, 100], r"lengths\[0\] = -5: expected 0 <= length <= 16000"),
    ([1.5, 100], r"lengths .* holds 1.5: expected whole numbers of samples"),
    (["16000", "100"], r"lengths .* holds '16000': expected whole numbers of samples"),
])
def test_encoder_refuses_bad_lengths(logmel, lengths, pattern):
    with pytest.raises(ValueError, match=pattern):
        logmel(WAV, lengths)


def test_encoder_checks_keep_valid_calls_and_jit(logmel):
    """Whole-number float lengths are accepted; under jit the lengths are tracers and only the
    dtype checks run, so the traced call gives the same mask as the eager one."""
    lengths = np.array([16000, 8000])
    mask = np.asarray(logmel(WAV, lengths).mask)
    np.testing.assert_array_equal(mask.sum(1), logmel.num_frames(lengths))
    np.testing.assert_array_equal(np.asarray(logmel(WAV, lengths.astype(np.float64)).mask), mask)
    traced = jax.jit(lambda w, n: logmel(w, n).mask)(jnp.asarray(WAV), jnp.asarray(lengths))
    np.testing.assert_array_equal(np.asarray(traced), mask)
    with pytest.raises(TypeError, match="lengths has dtype float32: expected integer"):
        jax.jit(lambda w, n: logmel(w, n).mask)(WAV, lengths.astype(np.float32))


def test_unknown_encoder_name_lists_the_builtins(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as err:
        smi.load_encoder("hubert")
    text = str(err.value)
    assert "not in the Hugging Face cache" in text
    for name in ("logmel", "mfcc", "whisper-tiny.en", "random:<arch>", "hubert-base"):
        assert name in text


@pytest.mark.parametrize("name, pattern", [
    ("random:hubert-base@x", r"'random:hubert-base@x': seed 'x' is not an integer; expected "
                             r"random:hubert-base@<int seed>"),
    ("random:hubret-base", r"unknown architecture 'hubret-base'; expected .*'hubert-base'"),
])
def test_bad_random_encoder_names(name, pattern):
    with pytest.raises(ValueError, match=pattern):
        smi.load_encoder(name)


def _classes(rng, n, scale=1.0):
    """4 Gaussian classes in 4 dims, means 1.5 apart on the axes (about 1 bit of MI)."""
    y = rng.integers(0, 4, n)
    z = rng.normal(size=(n, 4)) + 1.5 * np.eye(4)[y]
    return (z * scale).astype(np.float32), y


def test_probe_is_exact_at_extreme_feature_scales():
    """Standardisation in float64: features scaled by 1e30 give the same bound as unscaled
    ones (float32 statistics overflowed to std = inf and gave ~0 bits). Tolerance 1e-3 bits."""
    rng = np.random.default_rng(0)
    (zt, yt), (ze, ye) = _classes(rng, 1500), _classes(rng, 600)
    plain = smi.probe_mi(zt, yt, ze, ye, num_bootstrap=100)
    huge = smi.probe_mi(zt * np.float32(1e30), yt, ze * np.float32(1e30), ye, num_bootstrap=100)
    assert 0.8 < plain.bits < plain.ceiling_bits
    assert abs(huge.bits - plain.bits) < 1e-3


def test_probe_refuses_one_class_test_set_and_string_labels():
    rng = np.random.default_rng(1)
    (zt, yt), (ze, ye) = _classes(rng, 200), _classes(rng, 100)
    with pytest.raises(ValueError, match=r"y_test\) holds 1 class \[2\] over 100 items: H\(Y\) = 0"):
        smi.probe_mi(zt, yt, ze, np.full_like(ye, 2))
    with pytest.raises(ValueError, match=r"y has dtype <U\d+: expected integer class ids"):
        smi.probe_mi(zt, yt.astype(str), ze, ye.astype(str))


def test_report_lists_skipped_utterances_with_their_reasons(tmp_path):
    from speechmi_jax.analysis import report, results
    recs = [{"encoder": "e", "layer": l, "measure": "phone_mi", "value": 0.5 * l,
             "ci": [0.5 * l - 0.1, 0.5 * l + 0.1]} for l in range(3)]
    skipped = [{"id": f"u{i}", "reason": f"u{i}.wav: audio holds NaN or infinite samples"}
               for i in range(25)]
    md = report.write_report(results.Results(recs, {"skipped": skipped}), tmp_path,
                             num_bootstrap=50, num_permutations=50).read_text()
    section = md.split("## Skipped utterances")[1].split("\n## ")[0]
    assert "25 utterance(s) were left out" in section
    assert "- `u0`: u0.wav: audio holds NaN or infinite samples" in section
    assert "- `u19`:" in section and "- `u20`:" not in section and "and 5 more" in section
