"""Phone alignment readers: Praat TextGrid (as Montreal Forced Aligner writes), CTM, TIMIT
``.phn`` and TSV, all returning ``[(start_s, end_s, phone)]`` in the package's phone set.

Every reader goes through :func:`normalize_segments`, which maps symbols with
:func:`speechmi_jax.data.phones.normalize_phone` (unknown symbols raise, naming the file),
removes unlabelled segments (their frames stay ``IGNORE``) and checks the segments are
ordered and non-overlapping. :func:`fit_to_duration` checks them against the audio length.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

from speechmi_jax.data import phones as phones_lib

Segment = tuple[float, float, str]

FORMATS = ("textgrid", "ctm", "phn", "tsv")


class AlignmentError(ValueError):
    """An alignment file that cannot be used as it is (the message names the file)."""


def normalize_segments(raw: Iterable[tuple[float, float, str]], *, source: str,
                       tol_s: float = 1e-4) -> list[Segment]:
    """Maps raw ``(start, end, symbol)`` to the phone set and checks the timing.

    Zero-length segments and unlabelled symbols (``None`` from ``normalize_phone``) are left
    out; overlaps beyond ``tol_s`` or ``end < start`` raise :class:`AlignmentError`.
    """
    out: list[Segment] = []
    prev_end = -float("inf")
    for start, end, symbol in raw:
        start, end = float(start), float(end)
        if end < start - tol_s or start < -tol_s:
            raise AlignmentError(f"{source}: segment {symbol!r} has start {start:.4f} s and "
                                 f"end {end:.4f} s (expected 0 <= start <= end)")
        if start < prev_end - tol_s:
            raise AlignmentError(f"{source}: segment {symbol!r} at {start:.4f} s overlaps the "
                                 f"previous one ending at {prev_end:.4f} s")
        prev_end = max(prev_end, end)
        phone = phones_lib.normalize_phone(symbol, source=source)
        if phone is None or end - start <= 0:
            continue
        out.append((max(start, 0.0), end, phone))
    return out


def fit_to_duration(segments: Sequence[Segment], duration_s: float, *, source: str,
                    tolerance_s: float = 0.05) -> list[Segment]:
    """Clips segments to ``[0, duration_s]``; an overshoot beyond ``tolerance_s`` raises.

    Aligners and synthesizers round the last boundary (flite's kal voices pad the final
    pause ~0.12 s past the audio: the bundled-corpus builder clips those before saving).
    """
    if segments and segments[-1][1] > duration_s + tolerance_s:
        raise AlignmentError(
            f"{source}: alignment ends at {segments[-1][1]:.3f} s, past the end of the audio "
            f"({duration_s:.3f} s; tolerance {tolerance_s} s)")
    out = []
    for s, e, p in segments:
        e = min(e, duration_s)
        if e > s:
            out.append((s, e, p))
    return out


def read_textgrid(path: str | os.PathLike, tier: str = "phones") -> list[Segment]:
    """Reads one tier of a Praat TextGrid (long or short format) -> segments.

    Montreal Forced Aligner writes two interval tiers, ``words`` and ``phones`` (older
    versions name them ``<speaker> - words``/``<speaker> - phones``); the phone tier is the
    one named ``tier`` or ending in ``" - " + tier``. Empty intervals are pauses -> ``sil``.
    """
    from praatio import textgrid

    path = os.fspath(path)
    try:
        tg = textgrid.openTextgrid(path, includeEmptyIntervals=True)
    except Exception as e:  # praatio raises several types for malformed files
        raise AlignmentError(f"{path}: not a readable Praat TextGrid ({e})") from e
    names = tg.tierNames
    chosen = [n for n in names if n == tier] or [n for n in names if n.endswith(" - " + tier)]
    if len(chosen) != 1:
        raise AlignmentError(f"{path}: expected one tier named {tier!r} (or '<speaker> - "
                             f"{tier}'), found tiers {list(names)}")
    entries = tg.getTier(chosen[0]).entries
    return normalize_segments(((e.start, e.end, e.label) for e in entries), source=path)


def read_ctm(path: str | os.PathLike,
             bad: Optional[dict[str, Exception]] = None) -> dict[str, list[Segment]]:
    """Reads a phone-level CTM: ``<utt> <channel> <start_s> <duration_s> <phone> [conf]``.

    Returns ``{utterance id: segments}``; lines starting with ``;;`` are comments. ``bad``:
    see :func:`read_alignment_table`.
    """
    path = os.fspath(path)
    raw: dict[str, list] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0].startswith(";;"):
                continue
            if len(parts) not in (5, 6):
                _line_fault(bad, parts[0], AlignmentError(
                    f"{path}:{n}: expected 5 or 6 CTM fields (utt channel start duration "
                    f"phone [conf]), got {line!r}"))
                continue
            try:
                start, dur = float(parts[2]), float(parts[3])
            except ValueError:
                _line_fault(bad, parts[0], AlignmentError(
                    f"{path}:{n}: start/duration are not numbers: {line!r}"))
                continue
            raw.setdefault(parts[0], []).append((start, start + dur, parts[4]))
    return _normalize_table({u: sorted(s, key=lambda x: x[0]) for u, s in raw.items()}, path, bad)


def _line_fault(bad: Optional[dict], utt_id: Optional[str], error: AlignmentError) -> None:
    """A bad line of a many-utterance file: raise, or mark the utterance it names as bad."""
    if bad is None or utt_id is None:
        raise error
    bad.setdefault(utt_id, error)


def _normalize_table(raw: dict, path: str, bad: Optional[dict]) -> dict:
    """``normalize_segments`` per utterance; with ``bad``, a failing utterance is left out and
    its error kept in ``bad`` (so is an utterance already marked bad by :func:`_line_fault`)."""
    out = {}
    for key, segments in raw.items():
        if bad is not None and key in bad:
            continue
        try:
            out[key] = normalize_segments(segments,
                                          source=path if key is None else f"{path} ({key})")
        except (AlignmentError, phones_lib.UnknownPhoneError) as e:
            if bad is None or key is None:
                raise
            bad[key] = e
    return out


def read_timit_phn(path: str | os.PathLike, sample_rate: int = 16000) -> list[Segment]:
    """Reads a TIMIT ``.phn`` file: ``<begin_sample> <end_sample> <phone>`` per line."""
    path = os.fspath(path)
    raw = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise AlignmentError(f"{path}:{n}: expected '<begin> <end> <phone>', got {line!r}")
            try:
                b, e = int(parts[0]), int(parts[1])
            except ValueError:
                raise AlignmentError(f"{path}:{n}: sample indices are not integers: "
                                     f"{line!r}") from None
            raw.append((b / sample_rate, e / sample_rate, parts[2]))
    return normalize_segments(raw, source=path)


def read_tsv_table(path: str | os.PathLike,
                   bad: Optional[dict[str, Exception]] = None) -> dict[Optional[str], list[Segment]]:
    """Reads a TSV alignment -> ``{utterance id: segments}``.

    Two layouts: ``start_s end_s phone`` (one utterance; key ``None``) or
    ``utt_id start_s end_s phone`` (many utterances, grouped by id). A header line naming the
    columns is optional; lines starting with ``#`` are comments. ``bad``: see
    :func:`read_alignment_table`.
    """
    path = os.fspath(path)
    raw: dict[Optional[str], list] = {}
    width = None
    with open(path, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row or row[0].startswith("#"):
                continue
            if n == 1 and row[0].strip().lower() in ("start", "start_s", "utt_id", "utt", "id"):
                continue
            if width is None:
                width = len(row)
                if width not in (3, 4):
                    raise AlignmentError(f"{path}:{n}: expected 3 (start_s, end_s, phone) or 4 "
                                         f"(utt_id, start_s, end_s, phone) tab-separated "
                                         f"fields, got {row!r}")
            key = row[0] if width == 4 else None
            if len(row) != width:
                _line_fault(bad, key, AlignmentError(
                    f"{path}:{n}: expected {width} tab-separated fields as on the first line, "
                    f"got {row!r}"))
                continue
            try:
                raw.setdefault(key, []).append((float(row[-3]), float(row[-2]), row[-1]))
            except ValueError:
                _line_fault(bad, key, AlignmentError(
                    f"{path}:{n}: start/end are not numbers: {row!r}"))
    return _normalize_table(raw, path, bad)


def pick_utterance(table: dict, path, utt_id: Optional[str],
                   bad: Optional[dict[str, Exception]] = None) -> list[Segment]:
    """One utterance's segments from a table read by :func:`read_alignment_table`; an
    utterance recorded in ``bad`` raises its own error."""
    if None in table:
        return table[None]
    if bad and utt_id in bad:
        raise bad[utt_id]
    if utt_id is None:
        if len(table) != 1:
            raise AlignmentError(f"{path}: holds {len(table)} utterances; name one with utt_id")
        return next(iter(table.values()))
    if utt_id not in table:
        raise AlignmentError(f"{path}: no utterance {utt_id!r} in it "
                             f"(has {sorted(table)[:5]}...)")
    return table[utt_id]


def write_tsv(path: str | os.PathLike, table: dict[str, Sequence[Segment]]) -> None:
    """Writes ``{utt_id: segments}`` as a 4-column TSV with a header (0.1 ms precision)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("utt_id\tstart_s\tend_s\tphone\n")
        for utt_id, segments in table.items():
            for s, e, p in segments:
                f.write(f"{utt_id}\t{s:.4f}\t{e:.4f}\t{p}\n")


def detect_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    fmt = {".textgrid": "textgrid", ".ctm": "ctm", ".phn": "phn", ".tsv": "tsv"}.get(suffix)
    if fmt is None:
        raise AlignmentError(f"{path}: cannot tell the alignment format from the suffix "
                             f"{suffix!r}; expected one of .TextGrid, .ctm, .phn, .tsv")
    return fmt


def read_alignment_table(path: str | os.PathLike, *, fmt: Optional[str] = None,
                         sample_rate: int = 16000, tier: str = "phones",
                         bad: Optional[dict[str, Exception]] = None
                         ) -> dict[Optional[str], list[Segment]]:
    """Reads an alignment file -> ``{utterance id: segments}``; single-utterance formats
    (TextGrid, TIMIT ``.phn``, 3-column TSV) use the key ``None``.

    Without ``bad``, the first bad utterance raises. With a dict ``bad``, a many-utterance
    file (CTM, 4-column TSV) keeps its good utterances: each bad one (unknown phone symbol,
    overlap, unparsable line naming it) is left out of the table and its error stored in
    ``bad[utt_id]``, so one bad utterance does not cost the others. Faults of the whole file
    (unreadable, unknown layout) raise either way.
    """
    fmt = fmt or detect_format(path)
    if fmt == "textgrid":
        return {None: read_textgrid(path, tier=tier)}
    if fmt == "phn":
        return {None: read_timit_phn(path, sample_rate=sample_rate)}
    if fmt == "tsv":
        return read_tsv_table(path, bad=bad)
    if fmt == "ctm":
        return read_ctm(path, bad=bad)
    raise AlignmentError(f"{path}: unknown alignment format {fmt!r}; expected one of {FORMATS}")


def read_alignment(path: str | os.PathLike, *, fmt: Optional[str] = None,
                   utt_id: Optional[str] = None, sample_rate: int = 16000,
                   tier: str = "phones") -> list[Segment]:
    """Reads one utterance's phone alignment in any supported format.

    ``fmt`` defaults to the file suffix; CTM and 4-column TSV files hold many utterances, so
    ``utt_id`` picks one; ``sample_rate`` converts TIMIT sample indices (the rate of the
    audio the ``.phn`` file indexes); ``tier`` names the TextGrid phone tier.
    """
    table = read_alignment_table(path, fmt=fmt, sample_rate=sample_rate, tier=tier)
    return pick_utterance(table, path, utt_id)
