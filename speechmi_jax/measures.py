"""The measures a run can make: one registry, each entry with its labels, its views and the
records it writes (names in ``analysis.results.MEASURES``).

A measure is a function of :class:`Inputs` (one encoder's all-layer feature set, the corpus,
the run config) that trains one estimator bank over every layer and returns its records, built
by ``analysis/results.py``. Adding one: write the function, :func:`register` it with the
config keys that decide its numbers (they key its saved part, so changing one recomputes it).

Decisions taken here (and nowhere else):

* **Labels** come from the feature set: ``fs.phone`` indexes ``fs.phone_set`` (the corpus'
  phone set, written into the cache), speakers are ``fs.speakers``. Silence is the label
  ``phones.SILENCE`` of that set; a phone set without it is an error for the measures that
  need it (speakers, CTC).
* **Splits** come from the corpus (disjoint by prompt for the bundled one); the bootstrap and
  the dev split are by utterance.
* **Speaker measure** uses the synthetic, same-channel speakers only when ``speaker_domain``
  is set: a band-limited real recording among synthetic voices would be identified by its
  channel, not its voice (the bundled corpus marks ``domain`` and ``channel`` per utterance).
  Speaker labels are on speech frames (silence excluded). Its interval resamples test
  utterances within each speaker (the test set's speaker composition is fixed by design).
* **Label-free measures** (``config.views``), named by the views x Z_target x p_psi of the
  SSL-as-MI-bound table (README, "Pretraining"; ``ssl/table1.py``), each with its ceiling:

  ==========================  ==============================  ===============  =========
  measure                     views (context -> target)       p_psi            ceiling
  ==========================  ==============================  ===============  =========
  ``infonce_next_k``          z_t -> z_{t+k}; negatives from  InfoNCE critic   log2 K
                              other utterances
  ``infonce_next_k_same``     the same; negatives from the    InfoNCE critic   log2 K
                              same utterance (CPC, w2v2)
  ``infonce_next_k_aligned``  the same; negatives: frame      InfoNCE critic   log2 K
                              t+k of other utterances of the
                              same speaker (same index)
  ``codes_next_k``            z_t -> k-means code of the      linear softmax   H(codes)
                              log-mel window at t + k         (``probe``)
  ``codes_masked``            z_t of a pass with spans        linear softmax   H(codes)
                              masked, t in a span -> k-means  (``probe``)
                              code of the clean log-mel
                              window at t
  ``infonce_input``           z_t -> log-mel window at t      InfoNCE critic   log2 K
  ==========================  ==============================  ===============  =========

  ``k = round(next_k_seconds * frame_rate)``; the log-mel window is the frames within
  ``input_context_s`` of the frame's centre, stacked (the same input for every encoder, so
  the figures compare across encoders). Negatives from other utterances let a critic win by
  recognising the utterance (voice, channel); negatives from the same utterance let it win
  by the frame's position where the encoder adds absolute positional embeddings (Whisper).
  Measured, both sit near log2 K on random-init Whisper layers, while
  ``infonce_next_k_aligned`` (negatives sharing the speaker and the frame index) and
  ``codes_next_k`` stay far below their ceilings there (BENCHMARKS.md, "Label-free measures").
  ``codes_next_k``'s target is the *input's* code, not the layer's own: one target, and one
  ceiling, for every layer and encoder, which a collapsed layer cannot make easy (codes of
  the layer's own features would be trivial to predict for a layer that maps everything to a
  few points). Its k-means (``views.num_codes`` codes) is fitted on training frames only; the
  bound is ``H(codes) - CE`` on test frames, as HuBERT-style MLM targets (Hsu et al. 2021).
  ``codes_masked`` is the table's MLM row as a measurement: the encoder runs again with spans
  masked (``Encoder.apply_masked``, each family as it was trained: ``encoders/base.py``),
  spans of ``views.masked_span_s`` hiding ``views.masked_fraction`` of each utterance's
  frames, placed by the seed and the utterance id (``features.Masking``); that pass is a
  second cached feature extraction keeping only the masked frames, made by the pipeline's
  features stage for a measure registered with ``needs_masked`` (``Inputs.masked_features``). Its target and ceiling
  are ``codes_next_k``'s (codes of the *clean* input's log-mel window, at t itself), so what
  a masked frame's layer knows of the hidden audio comes from the context alone: for the
  log-mel baseline, whose masked frames are one constant, it is ~0. It costs one more encoder
  pass per encoder and is not among the demo's measures (BENCHMARKS.md, "Label-free
  measures").
* **Rank-based label-free measures** (``config.spectral``; kernels in
  ``estimators/spectral.py``): statistics of a layer's whole feature matrix, not bounds, so
  they have no ceiling. Each uses the test split's frames (a seeded subset of at most
  ``spectral.max_frames``), like every other measure's figure, and its interval resamples test
  utterances (the statistic's influence function, ``bootstrap.mean_ci``: the bootstrap
  linearised, one eigendecomposition per layer).

  ==============  ========================================  ================================
  measure         value                                     selection (``results.MEASURES``)
  ==============  ========================================  ================================
  ``rankme``      RankMe of the frames [N, D]               higher is better
  ``alpha_req``   alpha, eigenspectrum decay over ranks     nearest 1: score -|alpha - 1|
                  ``spectral.alpha_ranks`` (clipped to D)
  ``lidar``       LiDAR; items = frames t, views = frames   higher is better
                  t and t + k (k = ``lidar_shift_s``)
  ``cca_logmel``  PWCCA between the layer and the log-mel   lower is better (further from
                  window at its frame (``views.``           the input)
                  ``input_context_s``); shrinkage chosen
                  on dev, fitted on train
  ==============  ========================================  ================================

  LiDAR's views are neighbouring frames, not a masked pass: they need no second encoder pass,
  exist for every encoder (the log-mel baselines' masked frames are one constant, so a
  masked view would be degenerate there), and two frames ``lidar_shift_s`` (20 ms) apart lie
  mostly in one phone (phones last ~80 ms), so they are two views of the same content; k is
  in seconds, so every encoder's items span the same time.
* **CTC targets** come from each utterance's phone *segments* (not the frame labels, which
  lose phones shorter than a frame), so encoders of different frame rates are scored against
  the same references.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any, Callable, Optional

import numpy as np

from speechmi_jax.analysis import results as results_lib
from speechmi_jax.data import phones as phones_lib
from speechmi_jax.data.corpus import no_usable_utterance
from speechmi_jax.estimators import api, bootstrap, ctc, generic, spectral, views
from speechmi_jax.features import Masking

log = logging.getLogger("speechmi_jax.measures")


@dataclasses.dataclass
class Inputs:
    """What a measure gets: one encoder's features and the run's context."""

    encoder: str            # the name as the config spells it (the records' ``encoder``)
    fs: Any                 # features.FeatureSet of every hidden state [L+1, N, D]
    corpus: Any             # data.corpus.Corpus the features were extracted from
    config: Any             # the run config (configs/base.py)
    checkpoint_dir: str     # where the measure's estimator bank checkpoints
    input_features: Any = None   # log-mel FeatureSet of the same corpus (needs_input measures)
    masked_features: Any = None  # the encoder's masked pass, FeatureSet (needs_masked measures)

    @property
    def splits(self) -> np.ndarray:
        """The split name of every frame [N]."""
        return np.asarray(self.fs.splits)[self.fs.utt_index]


@dataclasses.dataclass(frozen=True)
class Measure:
    """A registry entry: ``compute(inputs) -> records`` of the ``records`` measures.

    settings: config keys (dotted) whose values decide the numbers; with the feature-cache
    key(s) they key the saved part of a run. needs_input: also uses the log-mel features
    (``Inputs.input_features``). needs_masked: also uses the encoder's masked pass
    (``Inputs.masked_features``, spans as :func:`masking_of` the config), which the pipeline's
    features stage then extracts; its cache key, not the clean one, keys the saved part.
    """

    name: str
    records: tuple[str, ...]
    settings: tuple[str, ...]
    compute: Callable[[Inputs], list[dict]]
    needs_input: bool = False
    needs_masked: bool = False


REGISTRY: dict[str, Measure] = {}


def register(name: str, records, settings, *, needs_input: bool = False,
             needs_masked: bool = False):
    """Decorator: adds ``compute`` to :data:`REGISTRY` as the measure ``name``."""
    def deco(compute):
        unknown = [r for r in records if r not in results_lib.MEASURES]
        if unknown:
            raise ValueError(f"measure {name!r} writes {unknown}, which analysis.results does "
                             f"not know; register_measure them first")
        if name in REGISTRY:
            raise ValueError(f"measure {name!r} is registered twice")
        REGISTRY[name] = Measure(name, tuple(records), tuple(settings), compute, needs_input,
                                 needs_masked)
        return compute
    return deco


def settings_of(measure: str, config) -> dict:
    """The config values that decide ``measure``'s numbers, as plain JSON data."""
    out = {}
    for key in REGISTRY[measure].settings:
        node = config
        for part in key.split("."):
            node = node[part]
        out[key] = node.to_dict() if hasattr(node, "to_dict") else node
    return out


def file_name(encoder: str) -> str:
    """A file-name-safe form of an encoder name (its parts and checkpoints are saved under it)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder).strip("_")


# ----------------------------------------------------------------------------- labels


def label_id(fs, symbol: str, what: str) -> int:
    """Index of ``symbol`` in the feature set's phone set, or an error naming the set."""
    try:
        return list(fs.phone_set).index(symbol)
    except ValueError:
        raise ValueError(f"{what}: the corpus' phone set has no {symbol!r} label (it is "
                         f"{list(fs.phone_set)[:10]}{'...' if len(fs.phone_set) > 10 else ''})"
                         ) from None


def seen_in_train(y: np.ndarray, splits: np.ndarray, what: str) -> np.ndarray:
    """Unlabels (-1) held-out items whose class never occurs in the training split.

    A probe cannot be scored on a class it never saw; such items are few (rare phones in a
    small corpus) and are logged, never dropped silently.
    """
    seen = np.unique(y[(splits == "train") & (y >= 0)])
    unseen = (y >= 0) & ~np.isin(y, seen)
    if unseen.any():
        log.warning("%s: %d held-out items of classes %s absent from the training split are "
                    "left out", what, int(unseen.sum()), sorted(set(y[unseen].tolist())))
    return np.where(unseen, -1, y).astype(np.int32)


def cap_training_frames(y: np.ndarray, splits: np.ndarray, max_frames: int,
                        seed: int) -> np.ndarray:
    """Keeps at most ``max_frames`` labelled training frames (a seeded random subset; the rest
    become -1). Dev and test frames are all kept, so the reported figure uses every held-out
    frame; the probe's training cost stops growing with the corpus."""
    train = np.flatnonzero((splits == "train") & (y >= 0))
    if not max_frames or train.size <= max_frames:
        return y
    drop = np.random.default_rng(seed).choice(train, train.size - max_frames, replace=False)
    y = y.copy()
    y[drop] = -1
    return y


def speaker_labels(fs, corpus, speaker_domain: Optional[str]):
    """Frame speaker ids [N] over speech frames (silence/unlabelled = -1), restricted to one
    domain -> (ids, speaker names)."""
    domain = {u.id: u.metadata.get("domain") for u in corpus}
    keep_utt = np.array([speaker_domain is None or domain.get(i) == speaker_domain
                         for i in fs.utt_ids])
    names = sorted({s for s, k in zip(fs.speakers, keep_utt) if k})
    if len(names) < 2:
        raise ValueError(f"speaker measure: {len(names)} speakers in domain {speaker_domain!r}; "
                         f"need >= 2")
    for split in ("train", "test"):
        in_split = np.asarray(fs.splits) == split
        if in_split.any() and not keep_utt[in_split].any():
            raise no_usable_utterance(split, f"speaker_domain={speaker_domain!r} keeps none of its "
                                             f"{int(in_split.sum())} utterances (their domains: "
                                             f"{sorted({str(domain.get(i)) for i in np.asarray(fs.utt_ids)[in_split]})})")
    ids = np.array([names.index(s) if k else -1 for s, k in zip(fs.speakers, keep_utt)], np.int32)
    sil = label_id(fs, phones_lib.SILENCE, "speaker measure (speech frames)")
    y = ids[fs.utt_index]
    return np.where((fs.phone >= 0) & (fs.phone != sil), y, -1).astype(np.int32), names


def ctc_targets(fs, corpus) -> list[np.ndarray]:
    """Per utterance of ``fs``, its phone-segment sequence as ids of ``fs.phone_set``, runs
    merged and silence removed (``estimators.ctc.ctc_targets``)."""
    sil = label_id(fs, phones_lib.SILENCE, "ctc measure")
    ids = {p: i for i, p in enumerate(fs.phone_set)}
    by_id = {u.id: u for u in corpus}
    out = []
    for uid in fs.utt_ids:
        segs = by_id[uid].phones or ()
        bad = sorted({p for _, _, p in segs if p not in ids})
        if bad:
            raise ValueError(f"ctc measure: utterance {uid!r} has phones {bad} that are not in "
                             f"the feature set's phone set")
        out.append(ctc.ctc_targets([ids[p] for _, _, p in segs], sil))
    return out


def _subsample(idx: np.ndarray, max_items: int, seed: int) -> np.ndarray:
    if max_items and idx.size > max_items:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_items, replace=False))
    return idx


def _next_k_pairs(x: Inputs, subsample: bool = True):
    """The next-k view: (k in frames, rows of frame t [P], rows of frame t + k [P]), a seeded
    subset of at most ``views.max_pairs`` pairs (the same pairs for every next-k measure), or
    every pair (``subsample=False``)."""
    k = max(1, int(round(x.config.views.next_k_seconds * x.fs.encoder["frame_rate"])))
    ia, ib, _ = views.shift_pairs(x.fs.utt_offsets, k)
    if not subsample:
        return k, ia, ib
    keep = _subsample(np.arange(ia.size), x.config.views.max_pairs, x.config.seed)
    return k, ia[keep], ib[keep]


# ----------------------------------------------------------------------------- measures


@register("phone", ("phone_mi", "phone_acc"), ("probe", "max_train_frames", "seed"))
def phone(x: Inputs) -> list[dict]:
    y = seen_in_train(x.fs.phone, x.splits, "phone probe")
    y = cap_training_frames(y, x.splits, x.config.max_train_frames, x.config.seed)
    est = api.probe_bank(x.fs.hidden, y, x.fs.utt_index, x.splits,
                         num_classes=len(x.fs.phone_set), checkpoint_dir=x.checkpoint_dir,
                         **x.config.probe)
    return results_lib.estimate_records(x.encoder, est, "phone_mi", "phone_acc")


@register("speaker", ("speaker_mi", "speaker_acc"),
          ("probe", "max_train_frames", "seed", "speaker_domain"))
def speaker(x: Inputs) -> list[dict]:
    y, names = speaker_labels(x.fs, x.corpus, x.config.speaker_domain)
    y = cap_training_frames(y, x.splits, x.config.max_train_frames, x.config.seed)
    # A test set's speakers and their share of it are chosen by design (every utterance has one
    # speaker), so the interval resamples utterances within each speaker.
    est = api.probe_bank(x.fs.hidden, y, x.fs.utt_index, x.splits, num_classes=len(names),
                         checkpoint_dir=x.checkpoint_dir, stratify_ci=True, **x.config.probe)
    return results_lib.estimate_records(x.encoder, est, "speaker_mi", "speaker_acc",
                                        speakers=names)


@register("infonce_next_k", ("infonce_next_k",),
          ("infonce", "views.next_k_seconds", "views.max_pairs", "seed"))
def infonce_next_k(x: Inputs) -> list[dict]:
    k, ia, ib = _next_k_pairs(x)
    est = api.infonce_bank(views.FrameView(x.fs.hidden, ia), views.FrameView(x.fs.hidden, ib),
                           x.fs.utt_index[ia], x.splits[ia], checkpoint_dir=x.checkpoint_dir,
                           **x.config.infonce)
    return results_lib.estimate_records(x.encoder, est, "infonce_next_k", k_frames=k)


@register("infonce_next_k_same", ("infonce_next_k_same",),
          ("infonce_same", "views.next_k_seconds", "views.max_pairs", "seed"))
def infonce_next_k_same(x: Inputs) -> list[dict]:
    """``infonce_next_k``'s pairs, with negatives from the query's own utterance."""
    k, ia, ib = _next_k_pairs(x)
    est = generic.infonce_same_utterance_bank(
        views.FrameView(x.fs.hidden, ia), views.FrameView(x.fs.hidden, ib), x.fs.utt_index[ia],
        x.splits[ia], seed=x.config.seed, checkpoint_dir=x.checkpoint_dir, **x.config.infonce_same)
    return results_lib.estimate_records(x.encoder, est, "infonce_next_k_same", k_frames=k)


@register("infonce_next_k_aligned", ("infonce_next_k_aligned",),
          ("infonce_same", "views.next_k_seconds", "seed"))
def infonce_next_k_aligned(x: Inputs) -> list[dict]:
    """``infonce_next_k``'s pairs, all of them (a random subset would thin every (speaker,
    frame index) group below K; the bank holds a chunk of layers at a time); the negatives of a
    query are frame t + k of *other* utterances of the same speaker at the same frame index:
    neither the voice nor the position tells the positive apart. The interval resamples
    speakers."""
    k, ia, ib = _next_k_pairs(x, subsample=False)
    speaker = np.asarray(x.fs.speaker)[x.fs.utt_index[ia]]                       # [P]
    position = ib - np.asarray(x.fs.utt_offsets)[x.fs.utt_index[ib]]            # [P]
    keys = speaker.astype(np.int64) * (int(position.max()) + 1) + position
    k_nce = x.config.infonce_same.k
    for split in ("train", "dev", "test"):
        in_split = x.splits[ia] == split
        if not in_split.any():
            continue   # no dev split: the bank moves training speakers to dev
        most = np.bincount(keys[in_split]).max()
        if most < k_nce:
            raise ValueError(f"infonce_next_k_aligned: split {split!r} has at most {most} pairs at "
                             f"one (speaker, frame index), fewer than K = infonce_same.k = {k_nce} "
                             f"(each needs K utterances of one speaker): lower infonce_same.k")
    est = generic.infonce_same_utterance_bank(
        views.FrameView(x.fs.hidden, ia), views.FrameView(x.fs.hidden, ib), speaker,
        x.splits[ia], seed=x.config.seed, checkpoint_dir=x.checkpoint_dir, block_keys=keys,
        **x.config.infonce_same)
    return results_lib.estimate_records(x.encoder, est, "infonce_next_k_aligned", k_frames=k)


def _input_code_bound(x: Inputs, hidden, rows: np.ndarray, targets: np.ndarray,
                      measure: str, **extra) -> list[dict]:
    """The predictive bound H(codes) - CE of the ``codes_*`` measures: a linear softmax (the
    probe bank) on ``hidden[:, rows]`` (hidden [L, N', D], rows [P]) predicts the k-means code
    (``views.num_codes``, fitted on training rows) of the clean log-mel window around frame
    ``targets[i]`` of ``x.fs`` (targets [P]); the utterance and split of item i are those of
    that frame."""
    groups = x.fs.utt_index[targets]
    splits = x.splits[targets]
    ctx = views.input_context(x.fs, x.input_features, x.config.views.input_context_s)[targets]
    y = views.kmeans_codes(ctx, splits == "train", x.config.views.num_codes, x.config.seed)
    y = seen_in_train(y, splits, f"{measure}: code prediction")
    y = cap_training_frames(y, splits, x.config.max_train_frames, x.config.seed)
    est = api.probe_bank(views.FrameView(hidden, rows), y, groups, splits,
                         num_classes=x.config.views.num_codes, checkpoint_dir=x.checkpoint_dir,
                         **x.config.probe)
    return results_lib.estimate_records(x.encoder, est, measure,
                                        num_codes=x.config.views.num_codes, **extra)


@register("codes_next_k", ("codes_next_k",),
          ("probe", "max_train_frames", "views.next_k_seconds", "views.input_context_s",
           "views.num_codes", "views.max_pairs", "seed"), needs_input=True)
def codes_next_k(x: Inputs) -> list[dict]:
    """Predictive bound H(codes) - CE: a linear softmax on the layer's frame t predicts the
    k-means code of the log-mel window around frame t + k (see the module docstring)."""
    k, ia, ib = _next_k_pairs(x)
    return _input_code_bound(x, x.fs.hidden, ia, ib, "codes_next_k", k_frames=k)


def masking_of(config):
    """The masked view's spans (``features.Masking``) as the config sets them."""
    return Masking(float(config.views.masked_span_s), float(config.views.masked_fraction),
                   int(config.seed))


@register("codes_masked", ("codes_masked",),
          ("probe", "max_train_frames", "views.masked_span_s", "views.masked_fraction",
           "views.input_context_s", "views.num_codes", "views.max_pairs", "seed"),
          needs_input=True, needs_masked=True)
def codes_masked(x: Inputs) -> list[dict]:
    """The MLM row as a measure: on the encoder's masked pass (``Inputs.masked_features``, a
    second cached feature pass keeping the masked frames), a linear softmax on the layer's
    frame t (t inside a span) predicts the k-means code of the *clean* log-mel window at t."""
    mfs, masking = x.masked_features, masking_of(x.config)
    if mfs is None:
        raise ValueError("codes_masked: the measure needs the encoder's masked pass (Inputs."
                         "masked_features)")
    if list(mfs.utt_ids) != list(x.fs.utt_ids) or mfs.frame_index is None:
        raise ValueError(f"codes_masked: the masked pass of {x.encoder} ({mfs.path}) does not "
                         f"hold the clean feature set's utterances")
    rows = _subsample(np.arange(mfs.num_frames), x.config.views.max_pairs, x.config.seed + 2)
    return _input_code_bound(x, mfs.hidden, rows, np.asarray(mfs.frame_index)[rows],
                             "codes_masked", span_frames=masking.span_frames(mfs.encoder["frame_rate"]),
                             masked_fraction=masking.fraction)


@register("infonce_input", ("infonce_input",),
          ("infonce", "views.input_context_s", "views.max_pairs", "seed"), needs_input=True)
def infonce_input(x: Inputs) -> list[dict]:
    ctx = views.input_context(x.fs, x.input_features, x.config.views.input_context_s)  # [N, Dctx]
    idx = _subsample(np.arange(x.fs.num_frames), x.config.views.max_pairs, x.config.seed + 1)
    est = api.infonce_bank(views.FrameView(x.fs.hidden, idx), ctx[idx][None], x.fs.utt_index[idx],
                           x.splits[idx], checkpoint_dir=x.checkpoint_dir, **x.config.infonce)
    return results_lib.estimate_records(x.encoder, est, "infonce_input")


@register("ctc", ("ctc_per",), ("ctc",))
def ctc_per(x: Inputs) -> list[dict]:
    """Linear-CTC PER per layer, against phone-segment targets (see the module docstring)."""
    targets = ctc_targets(x.fs, x.corpus)
    train, dev, test = ctc.splits_from_features(x.fs, targets=targets)

    def keep(split):
        has_phones = [targets[u].size > 0 for u in split.utts]
        if split.utts.size and not any(has_phones):
            raise no_usable_utterance(split.name, f"the ctc measure keeps utterances with phone "
                                                  f"segments other than silence; none of its "
                                                  f"{split.utts.size} has one")
        return dataclasses.replace(split, utts=split.utts[has_phones])

    layers = ctc.ctc_per_bank(keep(train), keep(dev), keep(test), num_phones=len(x.fs.phone_set),
                              checkpoint_dir=x.checkpoint_dir, **x.config.ctc)
    return results_lib.ctc_records(x.encoder, layers)


# ----------------------------------------------------------------------------- rank-based


def _split_rows(x: Inputs, split: str, salt: int, rows: Optional[np.ndarray] = None) -> np.ndarray:
    """Rows (frames, or items given as ``rows``' first frames) of ``split``: a seeded subset of
    at most ``spectral.max_frames``."""
    rows = np.arange(x.fs.num_frames) if rows is None else rows
    rows = rows[x.splits[rows] == split]
    if rows.size < 2:
        raise ValueError(f"the {split} split holds {rows.size} frames: the rank-based measures "
                         f"need >= 2")
    return _subsample(rows, x.config.spectral.max_frames, x.config.seed + salt)


def _layer_statistics(x: Inputs, measure: str, groups: np.ndarray, stat) -> list[dict]:
    """One record per layer: ``stat(layer) -> (value, influence [P], extra)``, the interval from
    the influence over utterances ``groups`` [P] (``bootstrap.mean_ci`` of value + IF)."""
    layers = []
    for layer in range(x.fs.hidden.shape[0]):   # one eigendecomposition per layer
        value, influence, extra = stat(layer)
        _, (lo, hi) = bootstrap.mean_ci(value + influence, groups,
                                        num_replicates=x.config.spectral.num_bootstrap,
                                        seed=x.config.seed)
        # a statistic with ~0 influence (PWCCA of log-mel with itself) can have every
        # replicate a few ulps off it: the interval holds the estimate
        layers.append((layer, value, (min(lo, value), max(hi, value)), extra))
    return results_lib.statistic_records(x.encoder, measure, layers,
                                         n_utterances=int(np.unique(groups).size))


def _layer_rows(x: Inputs, layer: int, rows: np.ndarray) -> np.ndarray:
    """Layer ``layer``'s features at ``rows`` [P, D], float32 (read from the cache)."""
    return np.asarray(x.fs.hidden[layer, rows], np.float32)


@register("rankme", ("rankme",), ("spectral.max_frames", "spectral.num_bootstrap", "seed"))
def rankme(x: Inputs) -> list[dict]:
    """RankMe of each layer's test frames (``spectral.rankme``)."""
    rows = _split_rows(x, "test", 3)

    def stat(layer):
        z = _layer_rows(x, layer, rows)
        value, influence = spectral.rankme_influence(z)
        return value, influence, {"n_test": int(rows.size), "max_rank": int(min(z.shape))}
    return _layer_statistics(x, "rankme", x.fs.utt_index[rows], stat)


@register("alpha_req", ("alpha_req",),
          ("spectral.max_frames", "spectral.num_bootstrap", "spectral.alpha_ranks", "seed"))
def alpha_req(x: Inputs) -> list[dict]:
    """alpha-ReQ of each layer's test frames (``spectral.alpha_req``)."""
    rows = _split_rows(x, "test", 3)

    def stat(layer):
        fit, influence = spectral.alpha_req_influence(_layer_rows(x, layer, rows),
                                                      ranks=tuple(x.config.spectral.alpha_ranks))
        return fit.alpha, influence, {"n_test": int(rows.size), "fit_ranks": list(fit.ranks),
                                      "fit_r2": fit.r2}
    return _layer_statistics(x, "alpha_req", x.fs.utt_index[rows], stat)


@register("lidar", ("lidar",),
          ("spectral.max_frames", "spectral.num_bootstrap", "spectral.lidar_shift_s",
           "spectral.lidar_delta", "seed"))
def lidar(x: Inputs) -> list[dict]:
    """LiDAR of each layer: items = test frames t, views = frames t and t + k (see the module
    docstring for why these views)."""
    sp = x.config.spectral
    k = max(1, int(round(sp.lidar_shift_s * x.fs.encoder["frame_rate"])))
    ia, ib, _ = views.shift_pairs(x.fs.utt_offsets, k)
    keep = np.isin(ia, _split_rows(x, "test", 4, ia))
    ia, ib = ia[keep], ib[keep]

    def stat(layer):
        pair = np.stack([_layer_rows(x, layer, ia), _layer_rows(x, layer, ib)], axis=1)
        value, influence = spectral.lidar_influence(pair, delta=sp.lidar_delta)
        return value, influence, {"n_test": int(ia.size), "shift_frames": k,
                                  "max_rank": int(pair.shape[2])}
    return _layer_statistics(x, "lidar", x.fs.utt_index[ia], stat)


@register("cca_logmel", ("cca_logmel",),
          ("spectral.max_frames", "spectral.num_bootstrap", "spectral.cca_l2",
           "views.input_context_s", "seed"), needs_input=True)
def cca_logmel(x: Inputs) -> list[dict]:
    """PWCCA between each layer and the log-mel window at its frames (``views.input_context``):
    the CCA is fitted on training frames at each shrinkage of ``spectral.cca_l2``, the one with
    the highest dev PWCCA is kept (without a dev split, 10 % of the training utterances), and
    its PWCCA on test frames is reported."""
    ctx = views.input_context(x.fs, x.input_features, x.config.views.input_context_s)  # [N, Dctx]
    codes = api.dev_from_train(api.split_codes(x.splits, x.fs.num_frames), x.fs.utt_index,
                               0.1, x.config.seed)
    split = np.asarray(api.SPLITS)[codes]
    rows = {}
    for salt, name in enumerate(api.SPLITS):
        idx = np.flatnonzero(split == name)
        if idx.size < 2:
            raise ValueError(f"cca_logmel: the {name} split holds {idx.size} frames; need >= 2")
        rows[name] = _subsample(idx, x.config.spectral.max_frames, x.config.seed + 5 + salt)
    mel = {name: np.asarray(ctx[r], np.float32) for name, r in rows.items()}
    mel_fit = spectral.cca_view(mel["train"], name="cca_logmel: log-mel")  # once, every layer

    def stat(layer):
        z = {name: _layer_rows(x, layer, r) for name, r in rows.items()}
        cca, dev = spectral.cca_dev_choice(z["train"], mel_fit, z["dev"], mel["dev"],
                                           x.config.spectral.cca_l2)
        value, influence = spectral.pwcca_score_influence(cca, z["test"], mel["test"])
        return value, influence, {"n_test": int(rows["test"].size), "l2": cca.reg,
                                  "dev_value": dev, "n_components": int(cca.rho.size)}
    return _layer_statistics(x, "cca_logmel", x.fs.utt_index[rows["test"]], stat)
