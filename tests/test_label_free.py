"""The label-free measures of the run, at measure level: each registered one writes records with
its ceiling and ceiling fraction, and ranks a layer that holds more content above one that holds
a voice and a position code (the contrastive measures that those decide fail, by construction)."""

import numpy as np
import pytest

from speechmi_jax import measures
from speechmi_jax.analysis import results
from speechmi_jax.configs import base as config_base
from speechmi_jax.estimators import views
from speechmi_jax.features import FeatureSet

RATE = 50.0          # frames per second of the synthetic "encoder" and of its "input features"
PHI, N_UTT, T, SPEAKERS = 0.9, 150, 64, 2


def _feature_set(hidden, utt_splits):
    n_layers, n, _ = hidden.shape
    offsets = np.arange(N_UTT + 1) * T
    speaker = np.arange(N_UTT) % SPEAKERS
    return FeatureSet(
        hidden=hidden.astype(np.float16), phone=np.zeros(n, np.int32),
        utt_index=np.repeat(np.arange(N_UTT), T).astype(np.int32), utt_offsets=offsets,
        utt_ids=[f"u{i}" for i in range(N_UTT)], speakers=[f"s{i}" for i in speaker],
        splits=list(utt_splits), speaker=speaker.astype(np.int32), phone_set=("sil",),
        speaker_set=tuple(f"s{i}" for i in range(SPEAKERS)),
        encoder={"name": "synthetic", "num_layers": n_layers - 1, "hidden_size": hidden.shape[2],
                 "frame_rate": RATE, "frame_offset_s": 0.01, "sample_rate": 16000})


def synthetic_layers():
    """Layer A holds the content (AR(1) sequences, phi = 0.9, 2 dims), a faint, noisy voice
    vector and noise; layer B a faint, noisy copy of the content, the voice vector itself
    (constant per speaker, 2 speakers) and an absolute position code (sin, cos of the frame
    index, as Whisper's positional embeddings). The input features are the content plus a
    little noise: what an input frame says is content, not voice or position."""
    rng = np.random.default_rng(0)
    content = np.zeros((N_UTT, T, 2))
    content[:, 0] = rng.normal(size=(N_UTT, 2))
    for t in range(1, T):
        content[:, t] = PHI * content[:, t - 1] + np.sqrt(1 - PHI**2) * rng.normal(size=(N_UTT, 2))
    voice = np.repeat(rng.normal(size=(SPEAKERS, 1, 2))[np.arange(N_UTT) % SPEAKERS], T, axis=1)
    angle = 2 * np.pi * np.arange(T) / 40.0
    position = np.broadcast_to(np.stack([np.sin(angle), np.cos(angle)], -1), (N_UTT, T, 2))
    layer_a = np.concatenate([content, 0.3 * voice + rng.normal(size=voice.shape),
                              rng.normal(size=voice.shape)], -1)
    layer_b = np.concatenate([0.3 * content + rng.normal(size=content.shape), voice, position], -1)
    hidden = np.stack([layer_a.reshape(-1, 6), layer_b.reshape(-1, 6)])  # [L=2, N, 6]
    inputs = (content + 0.1 * rng.normal(size=content.shape)).reshape(1, -1, 2)  # [1, N, 2]
    utt_splits = np.where(np.arange(N_UTT) < 100, "train",
                          np.where(np.arange(N_UTT) < 120, "dev", "test"))
    return _feature_set(hidden, utt_splits), _feature_set(inputs, utt_splits)


@pytest.fixture(scope="module")
def two_layers():
    return synthetic_layers()


def _config():
    c = config_base.base_config()
    # (a measure on the masked pass, codes_masked: tests/test_masked.py; the
    # rank-based statistics, which are not bounds: tests/test_spectral.py)
    c.measures = [m for m in measures.REGISTRY
                  if _label_free(m) and not measures.REGISTRY[m].needs_masked
                  and results.MEASURES[measures.REGISTRY[m].records[0]].unit == "bits"]
    c.probe.update(steps=40, l2=(1e-2,), num_bootstrap=100)
    c.infonce.update(k=16, steps=300, hidden=64, embed=32, learning_rates=(3e-3,),
                     num_bootstrap=100)
    c.infonce_same.update(k=8, steps=300, hidden=64, embed=32, learning_rates=(3e-3,),
                          num_bootstrap=100)
    c.views.update(next_k_seconds=2 / RATE, input_context_s=0.0, num_codes=8, max_pairs=0)
    return config_base.validate(c)


def _label_free(name):
    return all(results.MEASURES[r].kind == "label_free" for r in measures.REGISTRY[name].records)


def label_free_values(fs, inputs, config, folder):
    """{measure: [record dicts by layer]} of every label-free measure of the registry."""
    out = {}
    for name in config.measures:
        out[name] = measures.REGISTRY[name].compute(measures.Inputs(
            encoder="synthetic", fs=fs, corpus=None, config=config,
            checkpoint_dir=str(folder / name),
            input_features=inputs if measures.REGISTRY[name].needs_input else None))
    return out


def test_every_label_free_measure_ranks_the_content_layer_first(two_layers, tmp_path):
    fs, inputs = two_layers
    config = _config()
    assert set(config.measures) == {"infonce_next_k", "infonce_next_k_same", "infonce_next_k_aligned",
                                    "codes_next_k", "infonce_input"}
    by = {}
    for name, recs in label_free_values(fs, inputs, config, tmp_path).items():
        (rec_name,) = measures.REGISTRY[name].records
        assert [r["layer"] for r in recs] == [0, 1] and {r["measure"] for r in recs} == {rec_name}
        for r in recs:   # every record carries its ceiling and the fraction of it (results.py)
            assert r["extra"]["ceiling"] > 0
            assert r["extra"]["ceiling_fraction"] == pytest.approx(r["value"] / r["extra"]["ceiling"])
            assert r["extra"]["step"] > 0 or name == "codes_next_k"
        by[name] = [r["value"] for r in recs]
    # Layer A above layer B, by a margin (bits), for the measures whose negatives (or target)
    # share B's voice and position:
    for name in ("infonce_next_k_aligned", "codes_next_k", "infonce_input"):
        a, b = by[name]
        assert a >= b + 0.3, (name, by)
    # ... the other two contrastive measures fail, each by construction: with negatives from
    # other utterances B's voice and position tell its positive apart; with negatives from the
    # same utterance its position code does (frame t + k is the one k steps further on).
    for name in ("infonce_next_k", "infonce_next_k_same"):
        a, b = by[name]
        assert b > a, (name, by)
    # Upper side: A's next-k pairs carry at most the content's MI, -log(1 - phi^4) nats, when
    # no negative can be told apart by voice or position.
    assert by["infonce_next_k_aligned"][0] <= -np.log2(1 - PHI**4) + 0.1, by


def test_kmeans_codes_are_fitted_on_training_rows_only():
    # Training rows: two clusters at -1 and +1 (dim 0). Held-out rows far away (+50) must not
    # pull a centre: they take the code of the +1 cluster, and the training rows keep theirs.
    rng = np.random.default_rng(0)
    train = np.concatenate([rng.normal(-1, 0.1, (100, 2)), rng.normal(1, 0.1, (100, 2))])
    held_out = rng.normal(50, 0.1, (40, 2))
    x = np.concatenate([train, held_out]).astype(np.float32)
    fit = np.arange(240) < 200
    codes = views.kmeans_codes(x, fit, 2, seed=0)
    assert codes.shape == (240,) and codes.dtype == np.int32
    assert len(set(codes[:100])) == 1 and len(set(codes[100:200])) == 1 and codes[0] != codes[100]
    assert (codes[200:] == codes[100]).all()
    with pytest.raises(ValueError, match="3 training rows cannot fit 8 k-means codes"):
        views.kmeans_codes(x, np.arange(240) < 3, 8, seed=0)
    with pytest.raises(ValueError, match=r"fit has shape \(5,\): expected \(240,\)"):
        views.kmeans_codes(x, fit[:5], 2, seed=0)


def test_kmeans_codes_of_the_same_inputs_are_fitted_once(monkeypatch):
    # Encoders of one frame grid predict the same input codes: the second call reuses the fit;
    # other rows, another training set or another seed fit again, and a caller's changes to
    # the ids it got do not reach the next caller.
    fits = []
    real_fit = views.kmeans.kmeans_fit
    monkeypatch.setattr(views.kmeans, "kmeans_fit", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3)).astype(np.float16)
    fit = np.arange(300) < 200
    first = views.kmeans_codes(x, fit, 4, seed=0)
    first[:] = -1
    again = views.kmeans_codes(x.copy(), fit.copy(), 4, seed=0)
    assert len(fits) == 1 and (again >= 0).all()
    y = x.copy()
    y[250, 0] += 1
    for args in ((y, fit, 4, 0), (x, np.arange(300) < 150, 4, 0), (x, fit, 4, 1), (x, fit, 3, 0)):
        views.kmeans_codes(*args)
    assert len(fits) == 5


def test_aligned_negatives_need_k_utterances_per_speaker(two_layers, tmp_path):
    fs, inputs = two_layers   # dev: 10 utterances per speaker
    config = _config()
    config.infonce_same.k = 12
    with pytest.raises(ValueError, match=r"split 'dev' has at most 10 pairs at one \(speaker, "
                                         r"frame index\), fewer than K = infonce_same.k = 12"):
        measures.REGISTRY["infonce_next_k_aligned"].compute(measures.Inputs(
            encoder="synthetic", fs=fs, corpus=None, config=config, checkpoint_dir=str(tmp_path)))
