"""Corpora: ``load_corpus(name_or_path)`` -> :class:`Corpus` of :class:`Utterance`.

Sources:

* ``"bundled"``: the small parallel corpus shipped in ``speechmi_jax/data/bundled`` (see its
  README.md): the same prompts spoken by several speakers, with exact phone alignments.
* a manifest path (TSV or JSON; see :mod:`speechmi_jax.data.manifest`).
* ``"librispeech..."``: LibriSpeech through tensorflow-datasets joined with Montreal Forced
  Aligner TextGrids (see :mod:`speechmi_jax.data.tfds_librispeech`).

Loading reads manifests, alignment files and audio headers; samples are decoded only when
``utt.audio`` is read (and not kept), so a large corpus never sits in memory.

Bad items (unreadable, empty, truncated, multi-channel or non-finite audio, alignments past
the end of the audio, unknown phone symbols, empty alignments) raise an error naming the file;
with ``on_error="skip"`` they are left out, each reported with its reason in
``corpus.skipped`` and logged - never dropped silently. Skip mode decodes every file while
loading, so a fault that only decoding shows (NaN samples, a cut-short FLAC) is skipped there
rather than failing the run later. A many-utterance alignment file (CTM, 4-column TSV) is read
once, and one bad utterance in it costs only that utterance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from speechmi_jax.data import alignments as align_lib
from speechmi_jax.data import audio as audio_lib
from speechmi_jax.data import manifest as manifest_lib
from speechmi_jax.data import phones as phones_lib
from speechmi_jax.data import tfds_librispeech

log = logging.getLogger("speechmi_jax.data")

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"

Segment = tuple[float, float, str]


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One utterance. ``audio`` decodes the file on each access (float32 [S] at
    ``sample_rate``, resampled with soxr from ``native_rate`` when they differ)."""

    id: str
    speaker: str
    text: str
    split: str
    phones: Optional[tuple[Segment, ...]]  # (start_s, end_s, phone) in PHONE_SET; None = none
    audio_path: str
    sample_rate: int
    native_rate: int
    num_samples: int  # at sample_rate
    native_num_samples: int  # in the file, at native_rate
    metadata: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def audio(self) -> np.ndarray:
        wav, native = audio_lib.read_audio(self.audio_path, self.sample_rate)
        if native != self.native_rate:
            raise audio_lib.AudioError(f"{self.audio_path}: sample rate changed on disk "
                                       f"({self.native_rate} -> {native} Hz) since loading")
        return wav

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate

    @property
    def resampled(self) -> bool:
        return self.native_rate != self.sample_rate


@dataclasses.dataclass
class Corpus:
    """An ordered collection of utterances at one sample rate.

    ``split(name)`` returns the sub-corpus of one split; iterating yields utterances.
    ``skipped`` lists ``(item, reason)`` for every item left out by ``on_error="skip"``.
    """

    name: str
    sample_rate: int
    utterances: list[Utterance]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    metadata: dict = dataclasses.field(default_factory=dict)
    phone_set: tuple[str, ...] = phones_lib.PHONE_SET

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances)

    def __getitem__(self, i: int) -> Utterance:
        return self.utterances[i]

    @property
    def splits(self) -> list[str]:
        return sorted({u.split for u in self.utterances})

    @property
    def speakers(self) -> list[str]:
        return sorted({u.speaker for u in self.utterances})

    @property
    def total_duration_s(self) -> float:
        return float(sum(u.duration_s for u in self.utterances))

    def split(self, name: str | Sequence[str]) -> "Corpus":
        names = [name] if isinstance(name, str) else list(name)
        unknown = [n for n in names if n not in self.splits]
        if unknown:
            raise KeyError(f"corpus {self.name!r} has no split {unknown}; splits are "
                           f"{self.splits}")
        return dataclasses.replace(
            self, name=f"{self.name}[{'+'.join(names)}]",
            utterances=[u for u in self.utterances if u.split in names], skipped=[])

    def filter(self, predicate) -> "Corpus":
        """Sub-corpus of the utterances where ``predicate(utt)`` is true."""
        return dataclasses.replace(self, utterances=[u for u in self.utterances if predicate(u)],
                                   skipped=[])

    def with_sample_rate(self, rate: int) -> "Corpus":
        """The same corpus read at another rate (each file resampled from its native rate
        with soxr; logged)."""
        if rate == self.sample_rate:
            return self
        log.warning("corpus %s: audio is resampled to %d Hz with soxr (was read at %d Hz)",
                    self.name, rate, self.sample_rate)
        utts = [dataclasses.replace(
            u, sample_rate=rate, num_samples=audio_lib.num_samples_at(
                audio_lib.AudioInfo(u.native_rate, u.native_num_samples, 1), rate))
            for u in self.utterances]
        return dataclasses.replace(self, sample_rate=rate, utterances=utts)

    def fingerprint(self) -> str:
        """Content hash of everything that defines the corpus' frames and labels: ids, speakers,
        splits, phones, sample rate and each audio file's path, size and modification time."""
        h = hashlib.sha256()
        h.update(f"{self.sample_rate}|{self.phone_set}".encode())
        for u in self.utterances:
            st = os.stat(u.audio_path)
            h.update(json.dumps([u.id, u.speaker, u.split, u.audio_path, st.st_size,
                                 st.st_mtime_ns, u.num_samples, u.phones]).encode())
        return h.hexdigest()[:20]


def load_corpus(name_or_path: str | os.PathLike = "bundled", *, sample_rate: int = 16000,
                on_error: str = "raise", verify_audio: bool = False,
                alignment_tolerance_s: float = 0.05, domain: Optional[str] = None,
                eval_domain: Optional[str] = None, **options: Any) -> Corpus:
    """Loads a corpus by name (``"bundled"``, ``"librispeech..."``) or manifest path.

    Args:
      name_or_path: what to load (see the module docstring).
      sample_rate: rate every utterance's ``audio`` is returned at (the encoder's rate);
        files at other rates are resampled with soxr (logged once per native rate).
      on_error: ``"raise"`` (default) or ``"skip"`` bad items, reporting each as
        ``(utt_id, reason)`` in ``corpus.skipped`` and the log. Skip mode implies
        ``verify_audio``: what it keeps has been decoded once.
      verify_audio: decode every file while loading (catches corrupt data past a valid
        header; costs one read of the corpus).
      alignment_tolerance_s: how far an alignment may run past the end of the audio before
        it is an error; within it, segments are clipped to the audio.
      domain: keep only utterances whose manifest ``domain`` column has this value (the
        bundled corpus: ``"real"``, its one recorded speaker, or ``"synthetic"``).
      eval_domain: keep every ``train`` utterance but only the ``dev`` and ``test`` ones of
        this domain: probes learn from the whole training split and are chosen and scored on
        that domain alone (``"real"``: transfer to the recorded speaker with the training data
        of all speakers, where ``domain="real"`` leaves 77 training utterances).
      **options: passed to the TFDS LibriSpeech reader.
    """
    if domain is not None or eval_domain is not None:
        if domain is not None and eval_domain is not None:
            raise ValueError(f"load_corpus: give domain ({domain!r}) or eval_domain "
                             f"({eval_domain!r}), not both")
        corpus = load_corpus(name_or_path, sample_rate=sample_rate, on_error=on_error,
                             verify_audio=verify_audio, alignment_tolerance_s=alignment_tolerance_s,
                             **options)
        want = domain if domain is not None else eval_domain
        kept = corpus.filter(lambda u: u.metadata.get("domain") == want
                             or (eval_domain is not None and u.split == "train"))
        if not any(u.metadata.get("domain") == want for u in kept):
            found = sorted({str(u.metadata.get("domain")) for u in corpus})
            raise ValueError(f"corpus {corpus.name!r}: no utterance of domain {want!r}; the "
                             f"manifest's domain column holds {found}")
        kept.name = (f"{corpus.name}[domain={domain}]" if domain is not None
                     else f"{corpus.name}[eval_domain={eval_domain}]")
        return kept
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    name = os.fspath(name_or_path)
    common = dict(sample_rate=sample_rate, on_error=on_error, verify_audio=verify_audio,
                  alignment_tolerance_s=alignment_tolerance_s)
    if name == "bundled":
        if options:
            raise TypeError(f"unexpected options for the bundled corpus: {sorted(options)}")
        corpus = corpus_from_manifest(BUNDLED_DIR / "manifest.tsv", name="bundled", **common)
        meta_path = BUNDLED_DIR / "metadata.json"
        corpus.metadata.update(json.loads(meta_path.read_text(encoding="utf-8")))
        return corpus
    if os.path.exists(name):
        if options:
            raise TypeError(f"unexpected options for a manifest: {sorted(options)}")
        return corpus_from_manifest(name, **common)
    if name.split("/")[0].split(":")[0] == "librispeech":
        manifest, skipped, meta = tfds_librispeech.write_manifest(name, on_error=on_error,
                                                                  **options)
        corpus = corpus_from_manifest(manifest, name=meta.pop("name"), **common)
        corpus.skipped = skipped + corpus.skipped
        corpus.metadata.update(meta)
        return corpus
    raise FileNotFoundError(f"{name!r} is neither 'bundled', an existing manifest file, nor a "
                            f"TFDS LibriSpeech name ('librispeech[/config][:version]')")


def corpus_from_manifest(path: str | os.PathLike, *, name: Optional[str] = None,
                         sample_rate: int = 16000, on_error: str = "raise",
                         verify_audio: bool = False,
                         alignment_tolerance_s: float = 0.05) -> Corpus:
    """Builds a corpus from a manifest (see :mod:`speechmi_jax.data.manifest`)."""
    rows = manifest_lib.read_manifest(path)
    tables = _AlignmentFiles()
    verify_audio = verify_audio or on_error == "skip"
    utts, skipped = [], []
    seen_rates: set[int] = set()
    for row in rows:
        try:
            utt = _make_utterance(row, sample_rate, tables, verify_audio, alignment_tolerance_s)
        except (audio_lib.AudioError, align_lib.AlignmentError, phones_lib.UnknownPhoneError,
                EmptyUtteranceError, OSError) as e:
            if on_error == "raise":
                raise
            skipped.append((row["id"], str(e)))
            log.warning("skipped utterance %s: %s", row["id"], e)
            continue
        if utt.resampled and utt.native_rate not in seen_rates:
            seen_rates.add(utt.native_rate)
            log.warning("%s: audio at %d Hz is resampled to %d Hz with soxr (e.g. %s)",
                        path, utt.native_rate, sample_rate, utt.audio_path)
        utts.append(utt)
    if skipped:
        log.warning("%s: skipped %d of %d utterances (see corpus.skipped)", path, len(skipped),
                    len(rows))
    return Corpus(name=name or str(path), sample_rate=sample_rate, utterances=utts,
                  skipped=skipped,
                  metadata={"manifest": str(path),
                            "resampled_from_hz": sorted(seen_rates)})


def no_usable_utterance(split: str, emptied_by: str) -> ValueError:
    """The error for a split that a filter left empty: it names the split and the filter."""
    return ValueError(f"split {split!r} has no usable utterance: {emptied_by}")


class EmptyUtteranceError(ValueError):
    """An utterance with no audio samples or no phone segments."""


class _AlignmentFiles:
    """Reads each many-utterance alignment file of a manifest (CTM, TSV) once, keeping its
    table, its bad utterances, or the error that makes the whole file unusable."""

    def __init__(self):
        self._files: dict[tuple, Any] = {}

    def segments(self, path: str, fmt: Optional[str], rate: int, utt_id: str) -> list[Segment]:
        try:
            fmt = fmt or align_lib.detect_format(path)
        except align_lib.AlignmentError:
            fmt = None  # raised again below, once per file
        if fmt in ("textgrid", "phn"):  # one utterance per file: nothing to share or keep
            return align_lib.read_alignment(path, fmt=fmt, sample_rate=rate, utt_id=utt_id)
        key = (path, fmt)
        if key not in self._files:
            bad: dict[str, Exception] = {}
            try:
                self._files[key] = (align_lib.read_alignment_table(
                    path, fmt=fmt, sample_rate=rate, bad=bad), bad)
            except (align_lib.AlignmentError, phones_lib.UnknownPhoneError, OSError) as e:
                self._files[key] = e
        entry = self._files[key]
        if isinstance(entry, Exception):
            raise entry.with_traceback(None)  # once per row: keep the traceback from growing
        table, bad = entry
        return align_lib.pick_utterance(table, path, utt_id, bad)


def _make_utterance(row: dict, sample_rate: int, tables, verify_audio: bool,
                    tolerance_s: float) -> Utterance:
    audio_path = row["audio"]
    info = audio_lib.audio_info(audio_path)
    audio_lib.require_mono(audio_path, info.channels)
    if info.num_samples == 0:
        raise EmptyUtteranceError(f"{audio_path}: empty audio (0 samples)")
    if verify_audio:
        audio_lib.read_audio(audio_path, info.sample_rate)  # decode only: no resampling
    phones = None
    if row.get("alignment"):
        segs = tables.segments(row["alignment"], row.get("alignment_format") or None,
                               info.sample_rate, row["id"])
        segs = align_lib.fit_to_duration(segs, info.duration_s, source=row["alignment"],
                                         tolerance_s=tolerance_s)
        if not segs:
            raise EmptyUtteranceError(f"{row['alignment']}: no phone segments for utterance "
                                      f"{row['id']!r}")
        phones = tuple(segs)
    meta = {k: v for k, v in row.items() if k not in manifest_lib.KNOWN}
    return Utterance(id=row["id"], speaker=row["speaker"], text=row.get("text", ""),
                     split=row["split"], phones=phones, audio_path=audio_path,
                     sample_rate=sample_rate, native_rate=info.sample_rate,
                     num_samples=audio_lib.num_samples_at(info, sample_rate),
                     native_num_samples=info.num_samples, metadata=meta)
