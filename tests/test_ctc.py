"""Linear-CTC phone error rate: edit distance, decoding, targets, and the layer bank."""

import itertools

import numpy as np
import jax
import jax.numpy as jnp
import optax
import pytest

from speechmi_jax.estimators import api, bootstrap, ctc

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


def test_bucket_lengths_are_the_least_padding_choice():
    # Against every choice of at most k candidate lengths (multiples of 8, the longest one
    # kept): breaks if the dynamic programme misses the optimum or exceeds k lengths.
    rng = np.random.default_rng(0)
    for _ in range(60):
        lengths = rng.integers(1, 70, size=rng.integers(1, 25))
        k = int(rng.integers(1, 5))
        cand = np.arange(8 * -(-lengths.min() // 8), 8 * -(-lengths.max() // 8) + 1, 8)
        pad = lambda b: int(sum(b[np.searchsorted(b, n)] - n for n in lengths))
        best = min(pad(np.array(c + (cand[-1],))) for n in range(k)
                   for c in itertools.combinations(cand[:-1], n))
        got = ctc.bucket_lengths(lengths, k)
        assert len(got) <= k and got[-1] >= lengths.max() and pad(np.array(got)) == best


@pytest.mark.parametrize("counts,batch,want", [
    ((30, 10), 8, (6, 2)),            # exact shares
    ((5, 11), 4, (1, 3)),             # 1.25, 2.75: the larger remainder gets the step
    ((3, 3, 3), 4, (2, 1, 1)),        # a tie: the first bucket
    ((1, 1, 98), 4, (1, 1, 2)),       # 0.04, 0.04, 3.92: every bucket at least 1, still 4 in all
    ((1, 1, 30, 68), 10, (1, 1, 2, 6)),  # .1, .1, 3, 6.8: the extra 1 leaves the 3 (remainder 0)
])
def test_bucket_batches_known_answers(counts, batch, want):
    # Breaks if a bucket is left out of a step, or the steps' shares stop adding up to the batch.
    lengths = np.repeat(8 * np.arange(1, len(counts) + 1), counts)
    got_counts, per_step = ctc.bucket_batches(lengths, 8 * np.arange(1, len(counts) + 1), batch)
    assert tuple(got_counts) == counts and tuple(per_step) == want


def test_bucket_batches_refuses_a_batch_smaller_than_the_buckets():
    with pytest.raises(ValueError, match="batch_size 2: a step draws one utterance or more of each of 3"):
        ctc.bucket_batches([8, 16, 24], [8, 16, 24], 2)


def test_steps_draw_every_bucket_in_proportion_each_utterance_once_an_epoch():
    # Breaks if a step's counts stop following the buckets' sizes or their sum, if a bucket's
    # rows reach another bucket's, or if a bucket's epoch skips or repeats an utterance, is not
    # reshuffled, or is not a function of (key, step) alone.
    rng = np.random.default_rng(1)
    lengths = rng.integers(20, 200, size=120)
    buckets = ctc.bucket_lengths(lengths, 3)
    counts, per_step = ctc.bucket_batches(lengths, buckets, 16)
    np.testing.assert_array_equal(counts, np.bincount(np.searchsorted(buckets, lengths)))
    assert len(buckets) == 3 and per_step.sum() == 16 and per_step.min() >= 1
    assert np.all(np.abs(per_step - counts * 16 / 120) < 1)
    key = jax.random.key_data(jax.random.key(0))
    draw = jax.jit(jax.vmap(lambda s: ctc.stratified_rows(tuple(counts), tuple(per_step), key, s)))
    steps = int(np.max(-(-2 * counts // per_step)))        # two epochs of every bucket
    rows = np.asarray(draw(jnp.arange(steps)))             # [steps, 16]
    np.testing.assert_array_equal(rows, np.asarray(draw(jnp.arange(steps))))
    ends = np.cumsum(per_step)
    for b, (u, m, off) in enumerate(zip(counts, per_step, np.cumsum(counts) - counts)):
        stream = rows[:, ends[b] - m:ends[b]].reshape(-1)  # bucket b's rows, step after step
        first, second = stream[:u], stream[u:2 * u]
        np.testing.assert_array_equal(np.sort(first), off + np.arange(u))
        np.testing.assert_array_equal(np.sort(second), off + np.arange(u))
        assert u < 3 or np.any(first != second)


def test_held_out_rows_are_first_fit_decreasing():
    # Breaks if a row overflows, an utterance is lost or repeated, or an utterance goes past a
    # row that had room for it when it was placed (longest first).
    rng = np.random.default_rng(5)
    lengths = rng.integers(5, 60, size=80)
    rows = ctc.pack_rows(lengths, 100)
    np.testing.assert_array_equal(np.sort(np.concatenate(rows)), np.arange(80))
    used = [int(lengths[r].sum()) for r in rows]
    assert max(used) <= 100
    for i, r in enumerate(rows):  # no utterance would have fitted in an earlier row when placed
        for u in r:
            placed = [int(lengths[[v for v in rows[j] if lengths[v] > lengths[u]
                                   or (lengths[v] == lengths[u] and v < u)]].sum()) for j in range(i)]
            assert all(p + lengths[u] > 100 for p in placed)


def test_buckets_keep_padding_under_15_percent():
    # The benchmark's lengths (100-250 frames): padded to the longest, 30 % of the frames a run
    # processes are padding; in the default buckets under 15 %. Breaks if the groups stop
    # following the lengths (e.g. one bucket, or groups of random utterances).
    rng = np.random.default_rng(2)
    lengths = rng.integers(100, 251, size=200)
    hidden = np.zeros((1, lengths.sum(), 4), np.float16)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    targets = [np.zeros(n // 6, np.int32) for n in lengths]
    split = [ctc.CTCSplit(hidden, offsets, targets, idx, name)
             for idx, name in ((np.arange(120), "train"), (np.arange(120, 160), "dev"),
                               (np.arange(160, 200), "test"))]
    pk = ctc.packing(*split, num_phones=2, num_steps=400, eval_every=200)
    assert pk.longest_share > 0.25 and pk.padding_share < 0.15, pk
    one = ctc.packing(*split, num_phones=2, num_steps=400, eval_every=200, num_buckets=1)
    assert one.padding_share > 0.25 and len(one.buckets) == 1


def _packed(num_buckets):
    """A 24-utterance split (as train, dev and test) in the bank's layout: its layout, plan,
    per-split packings and fields, layer 1's rows x, and that layer's standardised frames."""
    hidden, offsets, targets = _synthetic_cache(24, seed=3)
    split = ctc.CTCSplit(hidden, offsets, targets, name="train")
    lay = ctc._layout(split, NUM_PHONES)
    plan, packs, max_len = ctc._plan([lay] * 3, 4, num_buckets, 10, 10)
    xs = ctc._padded_splits([split] * 3, [lay] * 3, packs, [1])
    frames = api.standardize_splits(ctc._layer_frames(split, 1, lay))[0][0].astype(np.float16)
    return lay, plan, packs, max_len, [{"x": x[0], **ctc._fields(lay, p)} for x, p in zip(xs, packs)], frames


def test_every_frame_lands_in_its_slot_and_padding_is_zero():
    # Breaks if a frame is written to the wrong row, slot or offset (training: one utterance a
    # row, bucket-major; held out: back to back), or padding is not zero.
    lay, plan, packs, _, data, frames = _packed(2)
    buckets = [t for t, _, _ in plan.buckets]
    assert len(buckets) > 1
    member = np.searchsorted(buckets, lay.lengths)
    np.testing.assert_array_equal(member[np.argsort(packs[0].row)], np.sort(member))
    starts = np.cumsum(lay.lengths) - lay.lengths
    for pack, d in zip(packs, data):
        seen = np.zeros(d["x"].shape[:2], bool)
        for u, (start, n) in enumerate(zip(starts, lay.lengths)):
            g, i = pack.row[u], pack.slot[u]
            at = d["starts"][g, i]
            assert d["lengths"][g, i] == n and d["llen"][g, i] == lay.targets[u].size
            np.testing.assert_array_equal(d["labels"][g, i, :d["llen"][g, i]], lay.targets[u] + 1)
            np.testing.assert_array_equal(d["x"][g, at:at + n], frames[start:start + n])
            seen[g, at:at + n] = True
        assert not np.any(d["x"][~seen]) and seen.sum() == lay.lengths.sum()


@jax.jit
def _padded_to_longest(params, x, mask, labels, lmask):
    """The layout before buckets on x [U, T, D]: the summed CTC loss and every utterance's edits."""
    logits = ctc.head_logits(params, x)
    hyp, hyp_len = ctc.greedy_decode(logits, mask)
    return (optax.ctc_loss(logits, 1.0 - mask, labels, 1.0 - lmask).sum(),
            jax.vmap(ctc.edit_distance)(hyp, hyp_len, labels - 1, lmask.sum(1)))


def test_loss_and_per_do_not_depend_on_the_packing():
    # A random head: the CTC loss of one step that takes every training row (each bucket's loss
    # at its own length), and the edits of the held-out rows, equal those of the layout before
    # buckets, every utterance padded to the longest (optax's CTC loss, greedy_decode,
    # edit_distance on [U, T]). Breaks if a bucket's frames or labels are cut wrong, rows are
    # given to the wrong bucket, a slot's path is read at the wrong offset, or padding reaches
    # a loss or a transcript.
    lay, plan, packs, max_len, data, frames = _packed(2)
    whole = tuple((t, s, u) for (t, s, _), u in zip(plan.buckets, plan.counts))  # m_b = U_b
    problem = ctc.ctc_problem(NUM_PHONES, 0.0, whole, plan.counts, max_len)
    rng = np.random.default_rng(4)
    params = {"w": jnp.asarray(rng.normal(size=(12, NUM_PHONES + 1)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=NUM_PHONES + 1), jnp.float32)}
    # The bank's loss is per reference phone; the training rows are bucket-major, m_b = U_b.
    total = float(jax.jit(problem.loss)(params, data[0])) * float(data[0]["w"].sum())
    edits = np.asarray(jax.jit(problem.evaluate)(params, data[1])["edits"])[packs[1].row, packs[1].slot]

    t_pad, s_pad = int(lay.lengths.max()), max(t.size for t in lay.targets)
    mask = np.arange(t_pad) < lay.lengths[:, None]
    lmask = np.arange(s_pad) < np.array([t.size for t in lay.targets])[:, None]
    x = np.zeros(mask.shape + frames.shape[1:], np.float16)
    labels = np.zeros(lmask.shape, np.int32)
    x[mask], labels[lmask] = frames, np.concatenate(lay.targets) + 1
    want_loss, want_edits = _padded_to_longest(params, x, mask, labels, lmask)
    np.testing.assert_array_equal(edits, np.asarray(want_edits))
    assert total == pytest.approx(float(want_loss), rel=1e-5)


def test_a_step_weighs_its_buckets_as_a_uniform_minibatch():
    # A step draws m_b of bucket b's U_b utterances, m_b rounded from U_b's share of the batch
    # (here 1 of 5 short ones and 3 of 11 long ones: 1.25 and 2.75 rounded); its loss weighs
    # bucket b by U_b sum(m) / (U m_b). With every utterance of a bucket a copy of one, any
    # step's loss then equals the per-phone loss of the whole split. Breaks if the weights go,
    # or weigh the wrong bucket.
    hidden, offsets, targets = _synthetic_cache(6, seed=5)
    lengths = np.diff(offsets)
    short, long_ = int(np.argmin(lengths)), int(np.argmax(lengths))
    pick = [short] * 5 + [long_] * 11
    frames = np.concatenate([hidden[:, offsets[u]:offsets[u + 1]] for u in pick], axis=1)
    split = ctc.CTCSplit(frames, np.concatenate([[0], np.cumsum(lengths[pick])]),
                         [targets[u] for u in pick], name="train")
    lay = ctc._layout(split, NUM_PHONES)
    plan, packs, max_len = ctc._plan([lay] * 3, 4, 2, 10, 10)
    assert plan.counts == (5, 11) and [m for _, _, m in plan.buckets] == [1, 3]
    problem = ctc.ctc_problem(NUM_PHONES, 0.0, plan.buckets, plan.counts, max_len)
    train = {"x": ctc._padded_splits([split] * 3, [lay] * 3, packs, [1])[0][0], **ctc._fields(lay, packs[0])}
    rng = np.random.default_rng(6)
    params = {"w": jnp.asarray(rng.normal(size=(12, NUM_PHONES + 1)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=NUM_PHONES + 1), jnp.float32)}
    rows = np.array([2, 5, 9, 14])  # a step: 1 short row (rows 0-4), then 3 long ones (5-15)
    value = jax.jit(problem.loss)(params, {k: v[rows] for k, v in train.items()})
    mask = np.arange(train["x"].shape[1]) < train["lengths"]
    lmask = np.arange(train["labels"].shape[2]) < train["llen"]
    total, _ = _padded_to_longest(params, train["x"], mask, train["labels"][:, 0], lmask)
    assert float(value) == pytest.approx(float(total) / train["w"].sum(), rel=1e-5)


@pytest.fixture(scope="module")
def splits():
    hidden, offsets, targets = _synthetic_cache(180, seed=0)
    idx = np.arange(180)
    return (ctc.CTCSplit(hidden, offsets, targets, idx[:120], "train"),
            ctc.CTCSplit(hidden, offsets, targets, idx[120:150], "dev"),
            ctc.CTCSplit(hidden, offsets, targets, idx[150:], "test"))


# Two buckets: a step computes two CTC losses at two lengths (each compiles in every bank test).
KW = dict(num_phones=NUM_PHONES, learning_rates=(1e-2, 1e-1), num_steps=100, batch_size=8, num_buckets=2,
          eval_every=25, num_bootstrap=300, seed=0)


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


@pytest.fixture(scope="module")
def alone(splits, tmp_path_factory):
    """Each layer trained alone (layer_chunk=1), on one device, from a float16 np.memmap as a
    feature cache stores it: one run (one compile) for the two tests below."""
    hidden = splits[0].hidden
    path = tmp_path_factory.mktemp("alone") / "hidden.f16"
    mm = np.memmap(path, np.float16, "w+", shape=hidden.shape)
    mm[:] = hidden
    mm.flush()
    mm = np.memmap(path, np.float16, "r", shape=hidden.shape)
    split = [ctc.CTCSplit(mm, s.utt_offsets, s.targets, s.utts, s.name) for s in splits]
    return ctc.ctc_per_bank(*split, layers=[2, 0, 1], layer_chunk=1, devices=jax.devices()[:1], **KW)


def test_bank_equals_each_layer_trained_alone(bank, alone):
    # Zero init, elementwise Adam and a shared minibatch order make the bank's members
    # independent; only float summation order differs (here also from the device count), so
    # PERs agree to within 0.5 points (one or two edits of ~170 test phones) -- in practice
    # exactly.
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


def test_one_device_matches_eight(bank, alone):
    # The bank fixture ran on the 8 simulated devices (held-out rows sharded over "data"); one
    # device (and one layer at a time) changes only float reduction order: PERs within 0.5
    # points (about one edit of ~170 test phones), and the same dev choice.
    for a in alone:
        b = bank[a.layer]
        assert a.per == pytest.approx(b.per, abs=0.5)
        assert (a.lr, a.step) == (b.lr, b.step)


def test_resume_from_a_mid_run_checkpoint_replays_the_run(splits, bank, tmp_path):
    # Checkpoints every 25 steps; dropping the last two leaves step 50 of 100, from which the
    # rerun restores and ends exactly as the run that never stopped (the bank fixture, whose
    # compiled steps this reuses): same edits, same choice. A rerun from scratch would have
    # saved step 25 again, so the final step list shows that the rerun resumed.
    kw = dict(KW, checkpoint_dir=tmp_path, checkpoint_every=25)
    ctc.ctc_per_bank(*splits, **kw)
    steps = sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit())
    assert steps == [50, 75, 100]
    for s in steps[1:]:
        for f in sorted((tmp_path / str(s)).rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        (tmp_path / str(s)).rmdir()
    again = ctc.ctc_per_bank(*splits, **kw)
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == steps
    for a, b in zip(again, bank):
        np.testing.assert_array_equal(a.utt_edits, b.utt_edits)
        assert (a.per, a.lr, a.step) == (b.per, b.lr, b.step)


def test_run_spread_widens_each_side_by_the_t_interval_of_the_runs():
    lo, hi = bootstrap.with_run_spread(12.0, (11.0, 14.0), [10.0, 14.0], 0.95)
    r = 12.706204736 * np.std([10.0, 14.0], ddof=1) / np.sqrt(2)   # t_{1, 0.975}
    assert (lo, hi) == pytest.approx((12.0 - np.hypot(1.0, r), 12.0 + np.hypot(2.0, r)))
    assert bootstrap.with_run_spread(12.0, (11.0, 14.0), [12.0], 0.95) == (11.0, 14.0)
    assert bootstrap.with_run_spread(12.0, (11.0, 14.0), [12.0, 12.0], 0.95) == (11.0, 14.0)


def test_runs_average_seeded_runs_and_widen_the_interval_by_their_spread(splits, bank):
    # Run 0 is the bank fixture's run (seed 0, same compiled step), run 1 draws other minibatches.
    both = ctc.ctc_per_bank(*splits, **dict(KW, runs=2))
    lengths = both[0].utt_ref_lengths
    spread = 0
    for b, one in zip(both, bank):
        assert b.run_pers[0] == one.per and b.run_choices[0] == (one.lr, one.step)
        assert b.per == pytest.approx(np.mean(b.run_pers))
        assert b.per == pytest.approx(100.0 * b.utt_edits.sum() / lengths.sum())
        lo, hi = bootstrap.ratio_ci(b.utt_edits, lengths, num_replicates=KW["num_bootstrap"], seed=0)
        test_only = (100.0 * lo, 100.0 * hi)
        if b.run_pers[0] == b.run_pers[1]:
            assert b.ci == pytest.approx(test_only)
        else:
            spread += 1
            assert b.ci[0] < test_only[0] and b.ci[1] > test_only[1]
    assert spread >= 1   # the noise layer's two runs differ: the seeds reached the draws
