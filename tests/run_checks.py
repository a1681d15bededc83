"""What a finished run folder must hold, shared by the experiment smoke runs
(test_experiments.py) and the TPU-sweep notebook (test_colab.py)."""

import json
import math
from pathlib import Path

import pytest

# measure group of the pipeline -> the measures it records
GROUP_MEASURES = {"phone": ("phone_mi", "phone_acc"), "speaker": ("speaker_mi", "speaker_acc"),
                  "infonce_next_k": ("infonce_next_k",), "infonce_input": ("infonce_input",),
                  "ctc": ("ctc_per",)}


def hidden_states_of(encoder: str) -> int:
    """L + 1 for a tiny checkpoint folder (from its config.json) or a single-layer baseline."""
    if encoder in ("logmel", "mfcc"):
        return 1
    if encoder == "whisper-tiny.en":
        return 5
    return json.loads((Path(encoder) / "config.json").read_text())["num_hidden_layers"] + 1


def check_run(run_dir: Path, encoders, groups):
    """Every encoder x hidden state x measure recorded once, finite, inside its bounds."""
    doc = json.loads((run_dir / "results.json").read_text())
    records = doc["records"]
    measures = [m for g in groups for m in GROUP_MEASURES[g]]
    expected = {(e, layer, m) for e in encoders for layer in range(hidden_states_of(e))
                for m in measures}
    found = [(r["encoder"], r["layer"], r["measure"]) for r in records]
    assert len(found) == len(set(found)), "a record appears twice"
    assert set(found) == expected, (sorted(expected - set(found))[:5], sorted(set(found) - expected)[:5])
    for r in records:
        value, (lo, hi) = r["value"], r["ci"]
        assert all(math.isfinite(v) for v in (value, lo, hi)), r
        assert lo <= hi, r
        if r["measure"].endswith("_mi") or r["measure"].startswith("infonce"):
            # probe bound H(Y) - CE <= H(Y); InfoNCE bound log K - L_NCE <= log K
            assert r["unit"] == "bits" and value <= r["extra"]["ceiling"] + 1e-6, r
        if r["measure"].endswith("_acc"):
            assert 0.0 <= value <= 1.0, r
        if r["measure"] == "ctc_per":
            assert value >= 0.0 and r["unit"] == "percent", r
    for r in records:
        if r["measure"].startswith("infonce"):
            assert r["extra"]["ceiling"] == pytest.approx(math.log2(16)), r  # smoke K = 16
    report = (run_dir / "report.md").read_text()
    assert all(e in report for e in encoders)
    csv_rows = (run_dir / "results.csv").read_text().strip().splitlines()
    assert len(csv_rows) == len(records) + 1
    return records
