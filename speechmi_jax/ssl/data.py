"""Pretraining data: audio of any Corpus, random crops with lengths, cluster targets.

* :class:`AudioSet`: the audio of one split in memory (float32 [S_i] each; the bundled corpus'
  train split is ~60 MB) with, for HuBERT-style targets, each utterance's code ids at the
  encoder's frames. Labels, phones and speakers are never read.
* :func:`train_batch`: batch ``step`` of a run with data seed ``seed`` is a pure function of
  (seed, step): B utterances drawn without replacement, each cropped to ``crop_samples`` at a
  start that is a multiple of ``frame_hop`` (so code ids crop exactly with the audio), shorter
  utterances zero-padded with their length. A resumed run therefore sees the same batches.
* :func:`dev_batches`: fixed batches of the first ``crop_samples`` of each dev utterance (a last
  partial batch is filled with empty rows).
* :func:`cluster_targets`: HuBERT iteration targets: k-means (:mod:`speechmi_jax.estimators.kmeans`,
  JAX) of a feature encoder's layer (``mfcc`` for iteration 1, a middle layer of the previous
  iteration's exported model for iteration 2), fitted on training frames, assigned to every
  frame and moved onto the pretrained encoder's frames (nearest frame centre).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from speechmi_jax import frames as frames_lib
from speechmi_jax.data import audio as audio_lib
from speechmi_jax.estimators import kmeans
from speechmi_jax.encoders.registry import load_encoder
from speechmi_jax.features import extract_features

log = logging.getLogger("speechmi_jax.ssl")


@dataclasses.dataclass
class AudioSet:
    """Audio of one split. codes[i]: int32 [T_i] ids at the pretrained encoder's frames, or None."""

    audio: list[np.ndarray]
    ids: list[str]
    codes: Optional[list[np.ndarray]] = None

    def __len__(self):
        return len(self.audio)


def load_split(corpus, split: str, max_utterances: int = 0) -> AudioSet:
    """The first ``max_utterances`` (0 = all) utterances of a split, audio only."""
    utts = list(corpus.split(split))
    if max_utterances:
        utts = utts[:max_utterances]
    if not utts:
        raise ValueError(f"corpus {corpus.name!r}: split {split!r} has no utterances")
    return AudioSet([np.asarray(u.audio, np.float32) for u in utts], [u.id for u in utts])


def _crop(data: AudioSet, i: int, start: int, crop: int, code_hop: int, code_frames: int):
    wav = data.audio[i][start:start + crop]
    out = {"audio": np.pad(wav, (0, crop - len(wav))), "lengths": np.int32(len(wav))}
    if data.codes is not None:
        f0 = start // code_hop
        c = data.codes[i][f0:f0 + code_frames]
        out["codes"] = np.pad(c, (0, code_frames - len(c))).astype(np.int32)
    return out


def _stack(items):
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


def train_batch(data: AudioSet, seed: int, step: int, batch_size: int, crop_samples: int,
                frame_hop: int, code_frames: int = 0, telephone_prob: float = 0.0) -> dict:
    """Batch ``step``: audio [B, crop] float32, lengths [B] int32 (+ codes [B, code_frames]).

    telephone_prob: the chance that a crop's audio goes through the telephone band
    (:func:`speechmi_jax.data.audio.telephone_band`: 16 kHz -> 8 kHz -> 16 kHz), drawn per row
    from its own generator, so the crops themselves are those of ``telephone_prob=0``."""
    if batch_size > len(data):
        raise ValueError(f"batch_size={batch_size} exceeds the {len(data)} training utterances")
    rng = np.random.default_rng([seed, step])
    rows = rng.choice(len(data), batch_size, replace=False)
    items = []
    for i in rows:
        slack = max(len(data.audio[i]) - crop_samples, 0) // frame_hop
        start = int(rng.integers(0, slack + 1)) * frame_hop
        items.append(_crop(data, int(i), start, crop_samples, frame_hop, code_frames))
    if telephone_prob > 0:
        band = np.random.default_rng([seed, step, 1]).random(batch_size) < telephone_prob
        for it in (it for it, b in zip(items, band) if b):
            n = int(it["lengths"])
            it["audio"][:n] = audio_lib.telephone_band(it["audio"][:n])
    return _stack(items)


def dev_batches(data: AudioSet, batch_size: int, crop_samples: int, frame_hop: int,
                code_frames: int = 0, max_batches: int = 0) -> list[dict]:
    """Fixed dev batches: the first crop of each utterance, ``batch_size`` rows each. A last
    partial batch (a dev split smaller than a batch, say) is filled with empty rows (length 0):
    the losses count real frames only, so its metrics are those of its real rows alone, and
    every batch keeps the shape the data-parallel sharding divides."""
    n = -(-len(data) // batch_size)
    n = min(n, max_batches) if max_batches else n
    empty = {"audio": np.zeros(crop_samples, np.float32), "lengths": np.int32(0)}
    if data.codes is not None:
        empty["codes"] = np.zeros(code_frames, np.int32)
    return [_stack([_crop(data, i, 0, crop_samples, frame_hop, code_frames) if i < len(data)
                    else empty for i in range(b * batch_size, (b + 1) * batch_size)])
            for b in range(n)]


def fit_codes(train_frames: np.ndarray, k: int, *, seed: int = 0, iters: int = 50,
              max_frames: int = 50000):
    """k-means on (a seeded subset of at most ``max_frames`` of) train_frames [N, D] -> centroids [k, D]."""
    x = np.asarray(train_frames, np.float32)
    if len(x) > max_frames:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_frames, replace=False))]
    return np.asarray(kmeans.kmeans_fit(x, k, iters=iters, seed=seed))


def map_frames(src: np.ndarray, src_rate: float, src_offset_s: float, num_dst: int, dst_rate: float,
               dst_offset_s: float) -> np.ndarray:
    """Per-frame values src [N_src, ...] at another frame rate: the source frame nearest each
    destination frame's centre (:func:`speechmi_jax.frames.frame_centres`) -> [num_dst, ...]."""
    centres = frames_lib.frame_centres(num_dst, dst_rate, dst_offset_s)
    j = np.clip(np.round((centres - src_offset_s) * src_rate).astype(np.int64), 0, len(src) - 1)
    return src[j]


def cluster_targets(corpus, sets: dict[str, AudioSet], *, source: str, layer: int, k: int,
                    dst_rate: float, dst_offset_s: float, num_frames_fn, cache_dir, seed: int = 0,
                    iters: int = 50, max_frames: int = 50000, centroids=None) -> dict:
    """HuBERT targets: fills ``sets[split].codes`` and returns {"h_target_bits", "centroids", ...}.

    source: an encoder name or path for :func:`speechmi_jax.load_encoder` (``"mfcc"`` for
    iteration 1, the previous iteration's output folder for iteration 2); layer: its hidden state.
    h_target_bits is the plug-in entropy of the ids over the training frames at the pretrained
    encoder's frames (the targets it is trained on). centroids [k, D]: given (e.g. those a run
    fitted), they are assigned instead of fitting new ones.
    """
    enc = load_encoder(source)
    if not 0 <= layer <= enc.num_layers:
        raise ValueError(f"targets.layer={layer}: {source} has hidden states 0..{enc.num_layers}")
    ids = {split: set(s.ids) for split, s in sets.items()}
    sub = corpus.filter(lambda u: u.id in ids.get(u.split, ()))
    feats = extract_features(enc, sub, Path(cache_dir), progress=False)
    by_id = {uid: i for i, uid in enumerate(feats.utt_ids)}

    def utt_frames(uid):
        u = by_id[uid]
        return np.asarray(feats.hidden[layer, feats.utt_offsets[u]:feats.utt_offsets[u + 1]], np.float32)

    train = sets["train"]
    if centroids is None:
        centroids = fit_codes(np.concatenate([utt_frames(uid) for uid in train.ids]), k, seed=seed,
                              iters=iters, max_frames=max_frames)
    for s in sets.values():
        s.codes = []
        for uid, wav in zip(s.ids, s.audio):
            codes = np.asarray(kmeans.kmeans_assign(utt_frames(uid), centroids))
            n_dst = int(num_frames_fn(np.asarray([len(wav)]))[0])
            s.codes.append(map_frames(codes, enc.frame_rate, enc.frame_offset_s, n_dst, dst_rate,
                                      dst_offset_s).astype(np.int32))
    h = kmeans.plugin_entropy_bits(np.concatenate(train.codes), k)
    log.info("cluster targets: k=%d on %s layer %d, H(Z_target) = %.3f bits (log2 K = %.3f)",
             k, source, layer, h, np.log2(k))
    return {"h_target_bits": float(h), "centroids": centroids, "source": source, "layer": layer}
