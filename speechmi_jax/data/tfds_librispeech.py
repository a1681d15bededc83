"""LibriSpeech through tensorflow-datasets, joined with Montreal Forced Aligner TextGrids.

    corpus = load_corpus("librispeech", split=("train_clean100", "dev_clean"),
                         textgrid_dir="librispeech_alignments/", cache_dir="~/ls_cache")

The ``librispeech`` TFDS builder (or ``librispeech/<config>:<version>``) must already be
prepared in ``data_dir`` (``tfds build librispeech`` or a copy): nothing is downloaded here
(``download=False``). Each example's ``speech`` (int16, 16 kHz) is written once to
``cache_dir/<builder>/<split>/<id>.flac`` so the corpus reads audio lazily like any other
(bounded memory), and a ``manifest.tsv`` there joins it with the TextGrid of the same
utterance id (MFA writes ``<speaker>/<utt id>.TextGrid`` or deeper; any folder layout is
searched). Utterances without a TextGrid raise, or with ``on_error="skip"`` are reported.

Utterance ``split`` is the TFDS split name; ``speaker`` is LibriSpeech's speaker id
(its splits are speaker-disjoint: pool several splits for speaker probes).

Several processes (``distributed.py``) share the copying: each reads its part of every split
(``tfds.split_for_jax_process``: contiguous, ``tfds.even_splits`` of the split) and writes
those FLAC files, then every process joins the parts' rows in TFDS order, so the manifest and
the corpus are those of one process; process 0 writes the manifest.

Dependencies: ``tensorflow-datasets`` (extra ``tfds``) and, to read prepared TFRecords,
``tensorflow``; both are imported only when this reader is used.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import json

import numpy as np

from speechmi_jax import distributed
from speechmi_jax.data import manifest as manifest_lib

log = logging.getLogger("speechmi_jax.data")

SAMPLE_RATE = 16000
COLUMNS = ["id", "audio", "speaker", "text", "split", "alignment", "chapter"]


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("the LibriSpeech reader needs tensorflow-datasets (and tensorflow "
                          "to read prepared TFRecords): pip install 'speechmi_jax[tfds]' "
                          "tensorflow-cpu") from e
    return tfds


def index_textgrids(textgrid_dir: str | os.PathLike) -> dict[str, Path]:
    """``{utterance id (file stem): path}`` of every ``*.TextGrid`` below a folder."""
    root = Path(textgrid_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: TextGrid folder does not exist")
    index: dict[str, Path] = {}
    for p in sorted(root.rglob("*.TextGrid")):
        if p.stem in index:
            raise ValueError(f"{root}: two TextGrids for utterance {p.stem!r}: "
                             f"{index[p.stem]} and {p}")
        index[p.stem] = p
    return index


def write_manifest(name: str = "librispeech", *, split: str | Sequence[str] = "dev_clean",
                   textgrid_dir: str | os.PathLike, cache_dir: str | os.PathLike,
                   data_dir: Optional[str | os.PathLike] = None, builder=None,
                   max_utterances: Optional[int] = None, on_error: str = "raise"):
    """Writes TFDS LibriSpeech splits as FLAC files + a manifest joined with MFA alignments.

    ``load_corpus("librispeech...", **options)`` calls this and reads the manifest; this module
    does not build corpora itself.

    Args:
      name: TFDS name, ``librispeech[/config][:version]``.
      split: one TFDS split name or several (e.g. ``("dev_clean", "test_clean")``).
      textgrid_dir: folder holding the MFA TextGrids (``phones`` tier), any layout.
      cache_dir: where the FLAC copies and the joined manifest go.
      data_dir: TFDS data dir holding the prepared dataset (TFDS default when None).
      builder: an already constructed TFDS builder (overrides ``name``/``data_dir``).
      max_utterances: read at most this many examples per split (in TFDS order).
      on_error: as for ``load_corpus`` (utterances without a TextGrid).

    Returns:
      (manifest path, skipped [(id, reason)], metadata: corpus ``name``, ``source``,
      ``builder``, ``version``, ``splits``).
    """
    tfds = _import_tfds()
    if builder is None:
        builder = tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))
    splits = [split] if isinstance(split, str) else list(split)
    missing = [s for s in splits if s not in builder.info.splits]
    if missing:
        raise KeyError(f"{builder.name}: no split {missing} in {builder.data_dir}; prepared "
                       f"splits are {sorted(builder.info.splits)}")
    grids = index_textgrids(textgrid_dir)
    out = Path(cache_dir).expanduser() / builder.name / str(builder.info.version)
    rows = {}
    for s in splits:
        whole = s if max_utterances is None else f"{s}[:{int(max_utterances)}]"
        ds = builder.as_dataset(split=tfds.split_for_jax_process(whole), shuffle_files=False)
        rows[s] = _copy_examples(tfds.as_numpy(ds), s, out / s, grids)
    rows = _joined(rows, splits, out / f"rows-{'+'.join(splits)}")
    no_grid = [r["id"] for r in rows if not r["alignment"]]
    skipped = []
    if no_grid:
        if on_error == "raise":
            raise FileNotFoundError(f"{textgrid_dir}: no TextGrid for {len(no_grid)} of "
                                    f"{len(rows)} utterances (e.g. {no_grid[:5]}); "
                                    f"on_error='skip' leaves them out")
        for uid in no_grid:
            log.warning("skipped utterance %s: no TextGrid in %s", uid, textgrid_dir)
        skipped = [(uid, f"{textgrid_dir}: no TextGrid for {uid}") for uid in no_grid]
        rows = [r for r in rows if r["alignment"]]
    manifest_path = out / f"manifest-{'+'.join(splits)}.tsv"
    distributed.on_main(lambda: manifest_lib.write_manifest(manifest_path, rows, COLUMNS),
                        f"writing {manifest_path}")
    return manifest_path, skipped, dict(
        name=f"{builder.name}[{'+'.join(splits)}]", source="tfds", builder=builder.name,
        version=str(builder.info.version), splits=splits)


def _copy_examples(examples, split: str, folder: Path, grids: dict) -> list[dict]:
    """Writes each example's speech to ``folder/<id>.flac`` (unless an intact copy is there)
    -> its manifest rows."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for ex in examples:
        uid = _str(ex["id"])
        flac = folder / f"{uid}.flac"
        speech = np.asarray(ex["speech"])
        if not flac.exists() or sf.info(str(flac)).frames != speech.shape[0]:
            tmp = flac.with_suffix(".tmp.flac")
            sf.write(str(tmp), speech.astype(np.int16), SAMPLE_RATE, format="FLAC",
                     subtype="PCM_16")
            os.replace(tmp, flac)
        grid = grids.get(uid)
        rows.append(dict(id=uid, audio=str(flac), speaker=str(int(ex["speaker_id"])),
                         text=_str(ex["text"]), split=split,
                         alignment=str(grid) if grid is not None else "",
                         chapter=str(int(ex["chapter_id"]))))
    return rows


def _joined(rows: dict[str, list], splits: list[str], stem: Path) -> list[dict]:
    """Every process' rows, split by split and within a split in process order (the TFDS
    order: each process read a contiguous part), exchanged through ``<stem>.part-<i>-of-<N>
    .json`` files; on one process, ``rows`` as they are."""
    n = distributed.process_count()
    if n == 1:
        return [r for s in splits for r in rows[s]]
    part = lambda i: stem.with_name(f"{stem.name}.part-{i}-of-{n}.json")
    tmp = part(distributed.process_index()).with_suffix(".tmp")
    tmp.write_text(json.dumps(rows))
    tmp.replace(part(distributed.process_index()))
    distributed.barrier(f"{stem}: every process' rows written")
    parts = [json.loads(part(i).read_text()) for i in range(n)]
    return [r for s in splits for p in parts for r in p[s]]


def _str(x) -> str:
    return x.decode("utf-8") if isinstance(x, (bytes, np.bytes_)) else str(x)
