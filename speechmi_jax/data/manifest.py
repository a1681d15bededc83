"""Manifests: one row per utterance, as TSV (header line) or JSON (a list of objects, or one
object per line).

Columns: ``audio`` (path, relative to the manifest's folder unless absolute) and ``speaker``
are required; ``id`` (default: the audio file's stem), ``text``, ``split`` (default
``"unsplit"``), ``alignment`` (a path; TextGrid, CTM, TIMIT .phn or TSV), ``alignment_format``
(default: from the suffix) are optional. Any other column is kept as utterance metadata
(e.g. ``domain``, ``channel``).
"""

from __future__ import annotations

import collections
import csv
import difflib
import json
import os
from pathlib import Path

REQUIRED = ("audio", "speaker")
KNOWN = ("id", "audio", "speaker", "text", "split", "alignment", "alignment_format")


EXPECTED = ("columns audio and speaker (required); id, text, split, alignment, alignment_format "
            "(optional); any other column is kept as utterance metadata")


def _did_you_mean(absent, row) -> str:
    """`` (is 'Audio' meant to be 'audio'?)`` for present columns close to absent ones."""
    hints = []
    for want in absent:
        close = [c for c in row if c is not None and c.strip().lower() == want]
        close = close or difflib.get_close_matches(want, [c for c in row if c is not None], 1, 0.6)
        hints += [f"is {close[0]!r} meant to be {want!r}?"] if close else []
    return f" ({'; '.join(hints)})" if hints else ""


class ManifestError(ValueError):
    """A manifest that cannot be read (the message names the file and the row)."""


def read_manifest(path: str | os.PathLike) -> list[dict[str, str]]:
    """Reads a TSV or JSON manifest -> rows with absolute ``audio``/``alignment`` paths."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ManifestError(f"{path}: cannot read the manifest ({e})") from e
    if path.suffix.lower() in (".json", ".jsonl"):
        stripped = text.lstrip()
        try:
            if stripped.startswith("["):
                rows = json.loads(text)
            else:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}: not valid JSON ({e})") from e
    else:
        reader = csv.DictReader(text.splitlines(), delimiter="\t")
        rows = list(reader)
    out = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ManifestError(f"{path}: row {n} is not an object: {row!r}")
        row = {k: ("" if v is None else str(v)) for k, v in row.items()}
        absent = [c for c in REQUIRED if c not in row]
        if absent:
            where = "the header" if path.suffix.lower() not in (".json", ".jsonl") else f"row {n}"
            raise ManifestError(f"{path}: {where} has no column {' or '.join(map(repr, absent))}"
                                f"{_did_you_mean(absent, row)}; its columns are {list(row)}; "
                                f"expected {EXPECTED}")
        missing = [c for c in REQUIRED if not row.get(c)]
        if missing:
            raise ManifestError(f"{path}: row {n} lacks required column(s) {missing}; "
                                f"columns are {sorted(row)}")
        for key in ("audio", "alignment"):
            if row.get(key):
                row[key] = str((path.parent / row[key]) if not os.path.isabs(row[key])
                               else Path(row[key]))
        row.setdefault("id", "")
        if not row["id"]:
            row["id"] = Path(row["audio"]).stem
        row.setdefault("split", "")
        row["split"] = row["split"] or "unsplit"
        row.setdefault("text", "")
        out.append(row)
    ids = [r["id"] for r in out]
    if len(set(ids)) != len(ids):
        dup = sorted(i for i, n in collections.Counter(ids).items() if n > 1)[:5]
        raise ManifestError(f"{path}: utterance ids are not unique (e.g. {dup})")
    return out


def write_manifest(path: str | os.PathLike, rows: list[dict], columns: list[str]) -> None:
    """Writes rows as a TSV manifest with the given column order (tabs/newlines refused)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\t".join(columns) + "\n")
        for row in rows:
            vals = [str(row.get(c, "")) for c in columns]
            bad = [v for v in vals if "\t" in v or "\n" in v]
            if bad:
                raise ManifestError(f"{path}: value {bad[0]!r} holds a tab or newline")
            f.write("\t".join(vals) + "\n")
