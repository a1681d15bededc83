"""The results schema: one record per (encoder, layer, measure), plus run metadata.

A record (see ``docs/results_schema.md``)::

    {"encoder": "whisper_tiny_en", "layer": 3, "measure": "phone_mi", "value": 2.91,
     "ci": [2.85, 2.97], "unit": "bits", "extra": {"ceiling": 4.87, "accuracy": 0.61}}

Records are built here and nowhere else: :func:`estimate_records` turns the estimators'
per-layer MI estimates into ``*_mi`` / ``*_acc`` / label-free (``infonce_*``, ``codes_*``)
records, label-free ones with their ``ceiling_fraction`` (:data:`SATURATION`),
:func:`ctc_records` the linear-CTC results into ``ctc_per`` records.

``layer`` indexes ``hidden_states`` (0 = the transformer's input; a single-layer baseline
such as log-mel has only layer 0). ``ci`` is the confidence interval ``[lo, hi]`` (95 % unless
``metadata["ci_level"]`` says otherwise). A measure's unit is fixed by :data:`MEASURES`; a
pipeline that adds a measure registers it with :func:`register_measure` first.

Files: ``results.json`` (``{"schema", "metadata", "records"}``) holds everything;
``results.csv`` holds the records as a flat table (``extra`` as a JSON string), for
spreadsheets. :func:`read_results` reads either back.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import operator
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

SCHEMA = "speechmi_jax.results/1"
# dims: an effective number of dimensions (RankMe, LiDAR); exponent: a power-law decay
# (alpha-ReQ); correlation: a (weighted mean) correlation coefficient in [-1, 1] (PWCCA).
UNITS = ("bits", "fraction", "percent", "dims", "exponent", "correlation")
CSV_COLUMNS = ("encoder", "layer", "measure", "value", "ci_lo", "ci_hi", "unit", "extra")


class ResultsError(ValueError):
    """A record, a results file or a metadata entry that does not follow the schema."""


@dataclasses.dataclass(frozen=True)
class MeasureSchema:
    """What a measure name means.

    kind: ``"supervised"`` (needs labels: probes, PER) or ``"label_free"`` (InfoNCE).
    higher_is_better: False for error rates; used to pick best layers and expected signs.
    target: None, or the value at which the measure is best (alpha-ReQ: 1); such a measure is
    ranked and correlated by its score -|value - target| (:func:`compared`), and
    higher_is_better (True) is about that score.
    """

    name: str
    unit: str
    higher_is_better: bool
    kind: str
    description: str
    target: Optional[float] = None


MEASURES: dict[str, MeasureSchema] = {}


def register_measure(name: str, unit: str, *, higher_is_better: bool, kind: str,
                     description: str, target: Optional[float] = None) -> MeasureSchema:
    """Adds a measure to :data:`MEASURES` (idempotent for an identical definition)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ResultsError(f"measure name {name!r}: expected lower_snake_case")
    if unit not in UNITS:
        raise ResultsError(f"measure {name!r}: unit {unit!r} is not one of {UNITS}")
    if kind not in ("supervised", "label_free"):
        raise ResultsError(f"measure {name!r}: kind {kind!r} is not 'supervised' or 'label_free'")
    if target is not None and not higher_is_better:
        raise ResultsError(f"measure {name!r}: with a target ({target}) the score -|value - "
                           f"target| is what is compared, and higher scores are better: pass "
                           f"higher_is_better=True")
    m = MeasureSchema(name, unit, bool(higher_is_better), kind, description,
                      None if target is None else float(target))
    if name in MEASURES and MEASURES[name] != m:
        raise ResultsError(f"measure {name!r} is already registered as {MEASURES[name]}")
    MEASURES[name] = m
    return m


for _args in (
    ("phone_mi", "bits", True, "supervised", "phone MI lower bound H(Y) - CE of a linear probe"),
    ("speaker_mi", "bits", True, "supervised",
     "speaker MI lower bound H(Y) - CE of a linear probe on speech frames"),
    ("phone_acc", "fraction", True, "supervised", "frame phone accuracy of the linear probe"),
    ("speaker_acc", "fraction", True, "supervised", "speaker accuracy of the linear probe"),
    ("infonce_next_k", "bits", True, "label_free",
     "InfoNCE MI bound between the layer's frame t and frame t+k"),
    ("infonce_next_k_same", "bits", True, "label_free",
     "InfoNCE MI bound between the layer's frame t and frame t+k, negatives from the same "
     "utterance"),
    ("infonce_next_k_aligned", "bits", True, "label_free",
     "InfoNCE MI bound between the layer's frame t and frame t+k, negatives: frame t+k of other "
     "utterances of the same speaker at the same frame index"),
    ("codes_next_k", "bits", True, "label_free",
     "predictive bound H(codes) - CE of a linear softmax on the layer's frame t for the k-means "
     "code of the log-mel window at frame t+k"),
    ("codes_masked", "bits", True, "label_free",
     "predictive bound H(codes) - CE of a linear softmax on the layer's frame t of a pass with "
     "spans masked (t inside one) for the k-means code of the clean log-mel window at frame t"),
    ("infonce_input", "bits", True, "label_free",
     "InfoNCE MI bound between the layer's frame and the input features at the same time"),
    ("ctc_per", "percent", False, "supervised",
     "phone error rate of a linear CTC head, greedy decoding"),
    # The rank-based label-free competitors (estimators/spectral.py). Their selection
    # direction is decided here: RankMe and LiDAR higher is better; alpha-ReQ is best at
    # alpha = 1 (target), compared as -|alpha - 1|; cca_logmel lower is better (a layer far
    # from its log-mel input is taken as the more abstract one).
    ("rankme", "dims", True, "label_free",
     "RankMe: exp of the entropy of the normalised singular values of the layer's test frames "
     "(Garrido et al. 2023)"),
    ("alpha_req", "exponent", True, "label_free",
     "alpha-ReQ: decay exponent alpha of the PCA eigenspectrum of the layer's test frames "
     "(Agrawal et al. 2022); best near 1, compared as -|alpha - 1|", 1.0),
    ("lidar", "dims", True, "label_free",
     "LiDAR: smooth rank of the between-item over within-item scatter, items = test frames t, "
     "views = frames t and t+k (Thilak et al. 2024)"),
    ("cca_logmel", "correlation", False, "label_free",
     "projection-weighted CCA between the layer and the log-mel window at its frame, on test "
     "frames (Pasad et al.); lower = further from the input"),
):
    register_measure(_args[0], _args[1], higher_is_better=_args[2], kind=_args[3],
                     description=_args[4], target=_args[5] if len(_args) > 5 else None)


def direction(measure: str) -> str:
    """How ``measure`` selects, in words: "higher is better", "lower is better" or "best near
    <target>" (then ranked by -|value - target|: :func:`compared`)."""
    m = MEASURES[measure]
    if m.target is not None:
        return f"best near {m.target:g}"
    return "higher is better" if m.higher_is_better else "lower is better"


def compared(rec) -> tuple[float, tuple[float, float]]:
    """(value, ci) that best layers and correlations use for a record: its value and interval,
    or, for a measure with a target (alpha-ReQ), the score -|value - target| and the
    interval of that score (its upper end is 0 when the value's interval holds the target)."""
    target = MEASURES[rec.measure].target
    if target is None:
        return rec.value, (rec.ci[0], rec.ci[1])
    lo, hi = rec.ci[0] - target, rec.ci[1] - target
    near = 0.0 if lo <= 0.0 <= hi else min(abs(lo), abs(hi))
    return -abs(rec.value - target), (-max(abs(lo), abs(hi)), -near)


@dataclasses.dataclass(frozen=True)
class Record:
    encoder: str
    layer: int
    measure: str
    value: float
    ci: tuple[float, float]
    unit: str
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"encoder": self.encoder, "layer": self.layer, "measure": self.measure,
                "value": self.value, "ci": [self.ci[0], self.ci[1]], "unit": self.unit,
                "extra": dict(self.extra)}


def record(encoder: str, layer: int, measure: str, value, ci, **extra) -> dict:
    """One validated record as a dict; ``extra`` entries that are None are left out."""
    return make_record({"encoder": encoder, "layer": layer, "measure": measure,
                        "value": value, "ci": [ci[0], ci[1]],
                        "extra": {k: _plain(v) for k, v in extra.items() if v is not None}},
                       where=f"{encoder} layer {layer} {measure}").to_dict()


def _plain(v):
    """A numpy scalar as the Python number it holds (JSON has no numpy types)."""
    return v.item() if getattr(v, "shape", None) == () and hasattr(v, "item") else v


# A label-free bound above this fraction of its ceiling is saturated: the ceiling (log2 K,
# H(codes)), not the layer, sets it, and differences between layers shrink into that cap.
SATURATION = 0.9


def ceiling_fraction(rec: Record) -> Optional[float]:
    """value / ceiling of a label-free record (``extra.ceiling_fraction``, or computed from
    ``extra.ceiling`` for records written without it); None for other records."""
    if MEASURES[rec.measure].kind != "label_free":
        return None
    frac = rec.extra.get("ceiling_fraction")
    ceiling = rec.extra.get("ceiling")
    if frac is None and isinstance(ceiling, (int, float)) and ceiling > 0:
        frac = rec.value / ceiling
    return frac


def estimate_records(encoder: str, estimates, measure: str, accuracy_measure: Optional[str] = None,
                     **extra) -> list[dict]:
    """Records of per-layer MI estimates (``estimators.api.MIEstimate``, one per layer).

    The bound becomes a ``measure`` record whose ``extra`` holds its ``ceiling`` (H(Y) or
    log2 K, bits), for a label-free measure also ``ceiling_fraction`` (value / ceiling; above
    :data:`SATURATION` the report flags it), the grid point and stopping step chosen on dev
    (``lr``, ``l2``, ``step``), ``n_test`` and the probe ``accuracy``; with
    ``accuracy_measure``, the accuracy also becomes a record of its own. ``extra`` is added to
    every record.
    """
    if measure not in MEASURES:
        raise ResultsError(f"unknown measure {measure!r}; known: {sorted(MEASURES)}")
    label_free = MEASURES[measure].kind == "label_free"
    out = []
    for e in estimates:
        frac = e.bits / e.ceiling_bits if label_free and e.ceiling_bits > 0 else None
        out.append(record(encoder, e.layer, measure, e.bits, e.ci, ceiling=e.ceiling_bits,
                          ceiling_fraction=frac, lr=e.lr, l2=e.l2, step=e.step, n_test=e.n_test,
                          accuracy=e.accuracy, **extra))
        if accuracy_measure is not None:
            out.append(record(encoder, e.layer, accuracy_measure, e.accuracy, e.accuracy_ci,
                              n_test=e.n_test, **extra))
    return out


def statistic_records(encoder: str, measure: str, layers, **extra) -> list[dict]:
    """Records of a per-layer statistic (the rank-based measures: ``rankme``, ``alpha_req``,
    ``lidar``, ``cca_logmel``; ``estimators/spectral.py``): layers = [(layer, value, (lo, hi),
    {extra})]. No ceiling: these are not bounds. A measure with a target (``alpha_req``)
    also carries ``score`` and ``score_ci``, what best layers and correlations use
    (:func:`compared`). ``extra`` is added to every record."""
    if measure not in MEASURES:
        raise ResultsError(f"unknown measure {measure!r}; known: {sorted(MEASURES)}")
    out = []
    for layer, value, ci, more in layers:
        rec = record(encoder, layer, measure, value, ci, **more, **extra)
        if MEASURES[measure].target is not None:
            score, score_ci = compared(make_record(rec))
            rec["extra"].update(score=score, score_ci=list(score_ci))
        out.append(rec)
    return out


def ctc_records(encoder: str, layers, **extra) -> list[dict]:
    """``ctc_per`` records of per-layer linear-CTC results (``estimators.ctc.ctc_per_bank``):
    the PER and its interval in percent; ``extra``: the learning rate and step chosen on dev,
    the dev PER there, and the test set's size in utterances and reference phones; with
    several training runs also ``run_pers`` and each run's ``run_lrs`` / ``run_steps`` (the
    value is their mean, the interval carries their spread; ``lr``, ``step``, ``dev_per``:
    the first run's)."""
    def runs(r):
        if not getattr(r, "run_pers", ()):
            return {}
        return dict(run_pers=list(r.run_pers), run_lrs=[lr for lr, _ in r.run_choices],
                    run_steps=[step for _, step in r.run_choices])

    return [record(encoder, r.layer, "ctc_per", r.per, r.ci, lr=r.lr, step=r.step,
                   dev_per=r.dev_per, num_test_utts=r.num_test_utts,
                   num_test_phones=r.num_test_phones, **runs(r), **extra)
            for r in layers]


def _json_safe(obj, where):
    try:
        json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ResultsError(f"{where}: not JSON-serializable without NaN/inf ({e})") from None


def _number(x, where) -> float:
    if isinstance(x, bool):
        raise ResultsError(f"{where}: expected a number, got {x!r}")
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ResultsError(f"{where}: expected a number, got {x!r}") from None
    if not math.isfinite(v):
        raise ResultsError(f"{where}: expected a finite number, got {v}")
    return v


def make_record(rec: Record | Mapping[str, Any], where: str = "record") -> Record:
    """Validates one record (a :class:`Record` or a dict in the schema) -> :class:`Record`.

    The unit may be left out of a dict; it then comes from :data:`MEASURES`.
    """
    if isinstance(rec, Record):
        rec = rec.to_dict()
    if not isinstance(rec, Mapping):
        raise ResultsError(f"{where}: expected a dict, got {type(rec).__name__}")
    allowed = {"encoder", "layer", "measure", "value", "ci", "unit", "extra"}
    unknown = set(rec) - allowed
    if unknown:
        raise ResultsError(f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(allowed)} "
                           f"(put anything else into 'extra')")
    for key in ("encoder", "layer", "measure", "value", "ci"):
        if key not in rec:
            raise ResultsError(f"{where}: missing key {key!r}")
    encoder = rec["encoder"]
    if not isinstance(encoder, str) or not encoder:
        raise ResultsError(f"{where}: 'encoder' must be a non-empty string, got {encoder!r}")
    try:   # Python or numpy integers; not bools, not floats
        layer = None if isinstance(rec["layer"], bool) else operator.index(rec["layer"])
    except TypeError:
        layer = None
    if layer is None or layer < 0:
        raise ResultsError(f"{where}: 'layer' must be an integer >= 0, got {rec['layer']!r}")
    measure = rec["measure"]
    if measure not in MEASURES:
        raise ResultsError(f"{where}: unknown measure {measure!r}; known: {sorted(MEASURES)} "
                           f"(add one with register_measure)")
    unit = rec.get("unit", MEASURES[measure].unit)
    if unit != MEASURES[measure].unit:
        raise ResultsError(f"{where}: measure {measure!r} is in {MEASURES[measure].unit!r}, "
                           f"got unit {unit!r}")
    value = _number(rec["value"], f"{where}: 'value'")
    ci = rec["ci"]
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        raise ResultsError(f"{where}: 'ci' must be [lo, hi], got {ci!r}")
    lo, hi = _number(ci[0], f"{where}: 'ci'[0]"), _number(ci[1], f"{where}: 'ci'[1]")
    if lo > hi:
        raise ResultsError(f"{where}: 'ci' lower end {lo} exceeds upper end {hi}")
    extra = rec.get("extra") or {}
    if not isinstance(extra, Mapping):
        raise ResultsError(f"{where}: 'extra' must be a dict, got {type(extra).__name__}")
    extra = {str(k): v for k, v in extra.items()}
    _json_safe(extra, f"{where}: 'extra'")
    return Record(encoder, layer, measure, value, (lo, hi), unit, extra)


def validate_records(records: Iterable) -> list[Record]:
    """Validates every record and that each (encoder, layer, measure) occurs once."""
    out, seen = [], {}
    for i, rec in enumerate(records):
        r = make_record(rec, where=f"record {i}")
        key = (r.encoder, r.layer, r.measure)
        if key in seen:
            raise ResultsError(f"record {i}: duplicate of record {seen[key]} for encoder "
                               f"{r.encoder!r}, layer {r.layer}, measure {r.measure!r} (summarize "
                               f"seeds into one record; keep per-seed values in 'extra')")
        seen[key] = i
        out.append(r)
    return out


@dataclasses.dataclass
class Results:
    """Validated records plus run metadata (config, corpus, encoders, ci_level, ...)."""

    records: list[Record]
    metadata: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.records = validate_records(self.records)
        if not isinstance(self.metadata, Mapping):
            raise ResultsError(f"metadata must be a dict, got {type(self.metadata).__name__}")
        self.metadata = dict(self.metadata)
        _json_safe(self.metadata, "metadata")
        self._index = {(r.encoder, r.layer, r.measure): r for r in self.records}

    @property
    def ci_level(self) -> float:
        return float(self.metadata.get("ci_level", 0.95))

    def encoders(self) -> list[str]:
        """Encoder names in order of first appearance."""
        return list(dict.fromkeys(r.encoder for r in self.records))

    def measures(self) -> list[str]:
        """Measures present, in :data:`MEASURES` order."""
        present = {r.measure for r in self.records}
        return [m for m in MEASURES if m in present]

    def layers(self, encoder: str, measure: Optional[str] = None) -> list[int]:
        return sorted({r.layer for r in self.records if r.encoder == encoder
                       and (measure is None or r.measure == measure)})

    def get(self, encoder: str, layer: int, measure: str) -> Optional[Record]:
        return self._index.get((encoder, layer, measure))

    def series(self, encoder: str, measure: str) -> list[Record]:
        """The encoder's records of one measure, by layer."""
        return [self._index[(encoder, l, measure)] for l in self.layers(encoder, measure)]


def as_results(results: Results | Sequence, metadata: Optional[Mapping] = None) -> Results:
    """A :class:`Results`, from one or from a list of records (+ metadata)."""
    if isinstance(results, Results):
        if metadata:
            return Results(results.records, {**results.metadata, **metadata})
        return results
    return Results(list(results), dict(metadata or {}))


def write_results(out_dir: str | Path, results: Results | Sequence,
                  metadata: Optional[Mapping] = None) -> tuple[Path, Path]:
    """Writes ``results.json`` and ``results.csv`` into ``out_dir`` -> their paths."""
    res = as_results(results, metadata)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": SCHEMA, "metadata": res.metadata,
           "records": [r.to_dict() for r in res.records]}
    json_path, csv_path = out / "results.json", out / "results.csv"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(json_path)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in res.records:
        w.writerow([r.encoder, r.layer, r.measure, repr(r.value), repr(r.ci[0]), repr(r.ci[1]),
                    r.unit, json.dumps(dict(r.extra), sort_keys=True)])
    csv_path.write_text(buf.getvalue(), encoding="utf-8")
    return json_path, csv_path


def read_results(path: str | Path) -> Results:
    """Reads ``results.json`` (or a run directory holding it, or a ``results.csv``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise ResultsError(f"{path}: no such results file")
    if path.suffix == ".csv":
        return _read_csv(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ResultsError(f"{path}: expected schema {SCHEMA!r}, got {got!r}")
    if not isinstance(doc.get("records"), list):
        raise ResultsError(f"{path}: 'records' must be a list")
    try:
        return Results(doc["records"], doc.get("metadata") or {})
    except ResultsError as e:
        raise ResultsError(f"{path}: {e}") from None


def _read_csv(path: Path) -> Results:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
            raise ResultsError(f"{path}: expected columns {CSV_COLUMNS}, got {reader.fieldnames}")
        records = []
        for i, row in enumerate(reader, start=2):
            try:
                records.append({
                    "encoder": row["encoder"], "layer": int(row["layer"]),
                    "measure": row["measure"], "value": float(row["value"]),
                    "ci": [float(row["ci_lo"]), float(row["ci_hi"])], "unit": row["unit"],
                    "extra": json.loads(row["extra"]) if row["extra"] else {}})
            except (ValueError, json.JSONDecodeError) as e:
                raise ResultsError(f"{path}: line {i}: {e}") from None
    try:
        return Results(records, {})
    except ResultsError as e:
        raise ResultsError(f"{path}: {e}") from None


@dataclasses.dataclass
class Comparison:
    """Two runs' records side by side (:func:`compare_results`)."""

    same: list[tuple[str, int, str]]              # (encoder, layer, measure) equal within tolerance
    differ: list[tuple[tuple[str, int, str], str, float]]   # key, first differing field, |a - b|
    only_a: list[tuple[str, int, str]]
    only_b: list[tuple[str, int, str]]

    @property
    def identical(self) -> bool:
        return not (self.differ or self.only_a or self.only_b)

    def lines(self, limit: int = 20) -> list[str]:
        """The comparison in words: counts, then the differing records (largest first)."""
        out = [f"{len(self.same) + len(self.differ)} records in both: {len(self.same)} equal, "
               f"{len(self.differ)} differ; {len(self.only_a)} only in the first, "
               f"{len(self.only_b)} only in the second"]
        for (enc, layer, measure), field, diff in sorted(self.differ, key=lambda d: -d[2])[:limit]:
            out.append(f"  differs: {enc} layer {layer} {measure}: {field} (|a - b| = {diff:.3g})")
        out += [f"  only in the first: {enc} layer {layer} {m}" for enc, layer, m in self.only_a[:limit]]
        out += [f"  only in the second: {enc} layer {layer} {m}" for enc, layer, m in self.only_b[:limit]]
        return out


def first_difference(a, b, where: str = "", tolerance: float = 0.0, *,
                     relative: bool = False) -> Optional[tuple[str, float]]:
    """The first field where JSON values ``a`` and ``b`` differ (numbers: by more than
    ``tolerance``) -> (field, the difference or inf), or None. ``relative``: a number's
    difference is |a - b| / max(1, |a|) (for trees mixing bits with bounds of hundreds of
    bits), else |a - b|."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if a.keys() != b.keys():
            return f"{where} keys {sorted(set(a) ^ set(b))}", math.inf
        found = (first_difference(a[k], b[k], f"{where}.{k}", tolerance, relative=relative) for k in a)
        return next((f for f in found if f), None)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{where} length", math.inf
        found = (first_difference(x, y, f"{where}[{i}]", tolerance, relative=relative)
                 for i, (x, y) in enumerate(zip(a, b)))
        return next((f for f in found if f), None)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    if numbers:
        d = abs(a - b) / (max(1.0, abs(a)) if relative else 1.0)
        return None if d <= tolerance else (where, d)
    return None if a == b else (where, math.inf)


def compare_results(a: Results, b: Results, tolerance: float = 0.0) -> Comparison:
    """Every record of ``a`` against ``b``'s of the same (encoder, layer, measure): value, CI,
    unit and every ``extra`` field; numbers equal within ``tolerance`` (0: bit-identical)."""
    keys_a = [(r.encoder, r.layer, r.measure) for r in a.records]
    keys_b = {(r.encoder, r.layer, r.measure) for r in b.records}
    out = Comparison([], [], [k for k in keys_a if k not in keys_b],
                     [k for k in sorted(keys_b) if a.get(*k) is None])
    for key in keys_a:
        if key in keys_b:
            diff = first_difference(a.get(*key).to_dict(), b.get(*key).to_dict(), "record", tolerance)
            if diff:
                out.differ.append((key, *diff))
            else:
                out.same.append(key)
    return out


def measure_summary(old: Results, new: Results) -> list[dict]:
    """Per measure of ``new`` (in order of first appearance), against ``old``: its records, how
    many equal ``old``'s exactly (:func:`compare_results`), the largest |value difference|,
    how many values lie outside ``old``'s CI and how many records ``old`` lacks."""
    same = set(compare_results(old, new).same)
    rows: dict[str, dict] = {}
    for r in new.records:
        row = rows.setdefault(r.measure, {"measure": r.measure, "records": 0, "identical": 0,
                                          "max_abs_diff": 0.0, "outside_old_ci": 0,
                                          "missing_before": 0})
        row["records"] += 1
        o = old.get(r.encoder, r.layer, r.measure)
        if o is None:
            row["missing_before"] += 1
            continue
        row["identical"] += (r.encoder, r.layer, r.measure) in same
        row["max_abs_diff"] = max(row["max_abs_diff"], abs(r.value - o.value))
        row["outside_old_ci"] += not o.ci[0] <= r.value <= o.ci[1]
    return list(rows.values())
