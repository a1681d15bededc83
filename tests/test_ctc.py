"""Linear-CTC phone error rate: edit distance, decoding, targets, and the layer bank."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from speechmi_jax.estimators import bootstrap, ctc

NUM_PHONES = 6   # ids 0..4 phones, 5 = silence
SIL = 5


@pytest.mark.parametrize("a,b,d", [
    ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("", "abc", 3), ("abc", "", 3),
    ("", "", 0), ("abc", "abc", 0), ("abc", "cba", 2), ("a", "b", 1), ("ab", "ba", 2),
    ("intention", "execution", 5),
])
def test_levenshtein_hand_cases(a, b, d):
    assert ctc.levenshtein(a, b) == d
    assert ctc.levenshtein(b, a) == d


def test_edit_distance_matches_reference_on_random_padded_pairs():
    rng = np.random.default_rng(0)
    n, h_pad, s_pad = 200, 12, 10
    hyp = rng.integers(0, 4, size=(n, h_pad))
    ref = rng.integers(0, 4, size=(n, s_pad))
    hl = rng.integers(0, h_pad + 1, size=n)
    rl = rng.integers(0, s_pad + 1, size=n)
    got = jax.jit(jax.vmap(ctc.edit_distance))(hyp, hl, ref, rl)
    want = [ctc.levenshtein(hyp[i, :hl[i]], ref[i, :rl[i]]) for i in range(n)]
    np.testing.assert_array_equal(np.asarray(got), want)


def test_greedy_decode_collapses_repeats_then_drops_blanks():
    # blank a a blank a b b | pad pad   (a = phone 0 -> head 1, b = phone 3 -> head 4)
    path = [0, 1, 1, 0, 1, 4, 4, 4, 1]
    mask = np.array([[True] * 7 + [False] * 2])
    logits = jax.nn.one_hot(jnp.asarray([path]), 5) * 10.0
    ids, n = ctc.greedy_decode(logits, jnp.asarray(mask))
    assert int(n[0]) == 3
    np.testing.assert_array_equal(np.asarray(ids[0, :3]), [0, 0, 3])


def test_ctc_targets_merge_runs_then_drop_silence_and_unlabelled():
    frames = [SIL, SIL, 3, 3, 4, SIL, 4, 4, -1, 2, 2, SIL]
    np.testing.assert_array_equal(ctc.ctc_targets(frames, SIL), [3, 4, 4, 2])
    assert ctc.ctc_targets([], SIL).size == 0


def test_ratio_ci_brackets_the_estimate():
    rng = np.random.default_rng(1)
    den = rng.integers(5, 30, size=(2, 300))
    num = np.stack([np.round(0.2 * den[0]), rng.binomial(den[1], 0.5)])
    lo, hi = bootstrap.ratio_ci(num, den, level=0.95, num_replicates=500, seed=0)
    point = num.sum(-1) / den.sum(-1)
    assert np.all(lo <= point) and np.all(point <= hi)
    # Binomial(0.5) per phone: the CI half-width is about 1.96 * sqrt(.25 / n_phones).
    half = 1.96 * np.sqrt(0.25 / den[1].sum())
    assert 0.6 * half < (hi[1] - lo[1]) / 2 < 1.6 * half


def _synthetic_cache(num_utts, seed, d=12, noise=0.15):
    """Layers: 0 = pure noise, 1 = one-hot phone + noise, 2 = rotated one-hot + noise, x5 scale.

    Phones last 2-4 frames; with noise 0.15 neighbouring one-hot codes lie 4.7 noise s.d.
    from the decision boundary, so a linear head can label nearly every frame right.
    """
    rng = np.random.default_rng(seed)
    frames, targets, offsets = [], [], [0]
    for _ in range(num_utts):
        phones = []
        for _ in range(rng.integers(4, 9)):
            p = int(rng.integers(0, NUM_PHONES))
            if phones and p == phones[-1]:
                p = (p + 1) % NUM_PHONES
            phones.append(p)
        labels = np.concatenate([np.full(rng.integers(2, 5), p) for p in phones])
        frames.append(labels)
        targets.append(ctc.ctc_targets(labels, SIL))
        offsets.append(offsets[-1] + labels.size)
    labels = np.concatenate(frames)
    n = labels.size
    onehot = np.zeros((n, d))
    onehot[np.arange(n), labels] = 1.0
    rot, _ = np.linalg.qr(rng.normal(size=(d, d)))
    hidden = np.stack([
        rng.normal(size=(n, d)),
        onehot + noise * rng.normal(size=(n, d)),
        5.0 * (onehot @ rot) + noise * rng.normal(size=(n, d)) + 3.0,
    ]).astype(np.float16)
    return hidden, np.asarray(offsets), targets


@pytest.fixture(scope="module")
def splits():
    hidden, offsets, targets = _synthetic_cache(180, seed=0)
    idx = np.arange(180)
    return (ctc.CTCSplit(hidden, offsets, targets, idx[:120], "train"),
            ctc.CTCSplit(hidden, offsets, targets, idx[120:150], "dev"),
            ctc.CTCSplit(hidden, offsets, targets, idx[150:], "test"))


KW = dict(num_phones=NUM_PHONES, learning_rates=(1e-2, 1e-1), num_steps=300, batch_size=8,
          eval_every=75, num_bootstrap=300, seed=0)


@pytest.fixture(scope="module")
def bank(splits):
    return ctc.ctc_per_bank(*splits, **KW)


def test_bank_per_is_near_zero_on_phone_layers_and_near_100_on_noise(bank):
    assert [r.layer for r in bank] == [0, 1, 2]
    noise, good, rotated = bank
    assert noise.per > 75.0, noise
    assert good.per < 5.0, good
    assert rotated.per < 5.0, rotated
    for r in bank:
        assert r.ci[0] <= r.per <= r.ci[1]
        assert r.num_test_utts == 30
        assert r.num_test_phones == int(r.utt_ref_lengths.sum())
        assert r.per == pytest.approx(100.0 * r.utt_edits.sum() / r.num_test_phones)
        assert r.lr in KW["learning_rates"]
        assert r.dev_per == min(r.dev_per_by_lr.values())


def test_bank_equals_each_layer_trained_alone(splits, bank, tmp_path):
    # layer_chunk=1 trains each layer alone, one after another; here from a float16 np.memmap,
    # as a feature cache stores it. Zero init, elementwise Adam and a shared minibatch order
    # make the bank's members independent; only float summation order differs, so PERs agree
    # to within 0.5 points (one or two edits of ~170 test phones) -- in practice exactly.
    hidden = splits[0].hidden
    mm = np.memmap(tmp_path / "hidden.f16", np.float16, "w+", shape=hidden.shape)
    mm[:] = hidden
    mm.flush()
    mm = np.memmap(tmp_path / "hidden.f16", np.float16, "r", shape=hidden.shape)
    split = [ctc.CTCSplit(mm, s.utt_offsets, s.targets, s.utts, s.name) for s in splits]
    alone = ctc.ctc_per_bank(*split, layers=[2, 0, 1], layer_chunk=1, **KW)
    assert [r.layer for r in alone] == [2, 0, 1]
    for r in alone:
        assert r.per == pytest.approx(bank[r.layer].per, abs=0.5)
        assert r.ci == pytest.approx(bank[r.layer].ci, abs=1.0)
        for lr in KW["learning_rates"]:
            assert r.dev_per_by_lr[lr] == pytest.approx(bank[r.layer].dev_per_by_lr[lr], abs=0.5)


def test_too_short_utterance_is_an_error_naming_it():
    hidden = np.zeros((1, 5, 3), np.float16)
    offsets = np.array([0, 2, 5])
    targets = [np.array([0, 1, 2]), np.array([0])]
    s = ctc.CTCSplit(hidden, offsets, targets, name="train")
    with pytest.raises(ValueError, match="train: utterance 0 has 2 frames"):
        ctc.ctc_per_bank(s, s, s, num_phones=3, batch_size=1)


def test_splits_from_a_feature_cache_layout():
    # The layout of features.FeatureSet: one [L+1, N, D] array, utt_offsets, a split per utt.
    class FS:
        hidden = np.zeros((2, 12, 3), np.float16)
        utt_offsets = np.array([0, 3, 6, 9, 12])
        splits = ["train", "train", "train", "test"]
        phone = np.array([5, 1, 1, 2, 2, 3, 0, 5, 0, 4, 4, 4])
        phone_set = ("a", "b", "c", "d", "e", "sil")
        path = None
    tr, dv, te = ctc.splits_from_features(FS, dev=0.34, seed=0)
    assert (tr.name, dv.name, te.name) == ("train", "dev", "test")
    assert len(tr.utts) == 2 and len(dv.utts) == 1 and set(tr.utts) | set(dv.utts) == {0, 1, 2}
    np.testing.assert_array_equal(te.utts, [3])
    assert [t.tolist() for t in tr.targets] == [[1], [2, 3], [0, 0], [4]]
    with pytest.raises(KeyError, match="no split 'dev'"):
        ctc.splits_from_features(FS)


def test_one_device_matches_eight(splits, bank):
    # The bank fixture ran on the 8 simulated devices (utterances sharded over "data"); one
    # device changes only float reduction order: PERs within 0.5 points (about one edit of
    # ~170 test phones), and the same dev choice.
    one = ctc.ctc_per_bank(*splits, devices=jax.devices()[:1], **KW)
    for a, b in zip(one, bank):
        assert a.per == pytest.approx(b.per, abs=0.5)
        assert (a.lr, a.step) == (b.lr, b.step)


def test_resume_from_a_mid_run_checkpoint_replays_the_run(splits, bank, tmp_path):
    # Checkpoints every 75 steps; dropping the last two leaves step 150 of 300, from which the
    # rerun restores and ends exactly as the run that never stopped: same edits, same choice.
    # A rerun from scratch would have saved step 75 again, so the final step list shows that
    # the rerun resumed.
    kw = dict(KW, checkpoint_dir=tmp_path, checkpoint_every=75, layers=[1, 2])
    first = ctc.ctc_per_bank(*splits, **kw)
    steps = sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit())
    assert steps == [150, 225, 300]
    for s in steps[1:]:
        for f in sorted((tmp_path / str(s)).rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        (tmp_path / str(s)).rmdir()
    again = ctc.ctc_per_bank(*splits, **kw)
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == steps
    for a, b, ref in zip(again, first, bank[1:]):
        np.testing.assert_array_equal(a.utt_edits, b.utt_edits)
        assert (a.per, a.lr, a.step) == (b.per, b.lr, b.step)
        assert a.per == pytest.approx(ref.per, abs=0.5)
