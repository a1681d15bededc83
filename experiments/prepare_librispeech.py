"""Prepares the LibriSpeech corpus of the ssl_*_librispeech experiments (run once).

    python experiments/prepare_librispeech.py --textgrid-dir librispeech_alignments/ \
        [--data-dir ~/tensorflow_datasets] [--out data/librispeech]

Reads the prepared TFDS ``librispeech`` splits (``tfds build librispeech`` beforehand;
nothing is downloaded here) joined with Montreal Forced Aligner TextGrids (any folder layout;
see ``speechmi_jax/data/tfds_librispeech.py``), takes the first N utterances of each split in
TFDS order (defaults: 500 train-clean-100, 100 dev-clean, 200 test-clean; ~1.2 h of audio), and
writes ``<out>/manifest.tsv`` whose ``split`` column says train / dev / test: the names the
experiment pipeline trains, selects and reports on. Utterances without a TextGrid are an
error unless ``--skip-missing``. Needs ``pip install '.[tfds]' tensorflow-cpu``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechmi_jax.data import manifest as manifest_lib

# Pipeline split -> (TFDS split, default number of utterances).
SPLITS = {"train": ("train_clean100", 500), "dev": ("dev_clean", 100), "test": ("test_clean", 200)}
COLUMNS = ["id", "audio", "speaker", "text", "split", "alignment", "chapter"]


def rename_splits(rows_by_split: dict[str, list[dict]]) -> list[dict]:
    """Rows of each pipeline split (read from the per-TFDS-split manifests) -> one list with
    ``split`` set to the pipeline's name; refuses an utterance that lands in two splits."""
    seen: dict[str, str] = {}
    out = []
    for split, rows in rows_by_split.items():
        for row in rows:
            if row["id"] in seen:
                raise ValueError(f"utterance {row['id']!r} is in both the {seen[row['id']]} "
                                 f"and the {split} split")
            seen[row["id"]] = split
            out.append(dict(row, split=split))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--textgrid-dir", required=True, help="MFA TextGrids of LibriSpeech")
    parser.add_argument("--data-dir", default=None, help="TFDS data dir (TFDS default if unset)")
    parser.add_argument("--out", default="data/librispeech", help="audio cache + manifest.tsv")
    parser.add_argument("--name", default="librispeech", help="TFDS name[/config][:version]")
    for split, (tfds_split, n) in SPLITS.items():
        parser.add_argument(f"--{split}", default=f"{tfds_split}:{n}", metavar="TFDS_SPLIT:N",
                            help=f"TFDS split and utterance count for {split} (default %(default)s)")
    parser.add_argument("--skip-missing", action="store_true",
                        help="leave out (and list) utterances without a TextGrid")
    args = parser.parse_args(argv)

    from speechmi_jax.data.corpus import load_corpus

    out = Path(args.out)
    rows_by_split = {}
    for split in SPLITS:
        tfds_split, _, n = getattr(args, split).partition(":")
        corpus = load_corpus(args.name, split=tfds_split, textgrid_dir=args.textgrid_dir,
                             cache_dir=out, data_dir=args.data_dir,
                             max_utterances=int(n) if n else None,
                             on_error="skip" if args.skip_missing else "raise")
        rows_by_split[split] = manifest_lib.read_manifest(corpus.metadata["manifest"])
        print(f"{split}: {len(corpus)} utterances of {tfds_split}, "
              f"{corpus.total_duration_s / 3600:.2f} h, {len(corpus.skipped)} skipped")
    path = out / "manifest.tsv"
    manifest_lib.write_manifest(path, rename_splits(rows_by_split), COLUMNS)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
