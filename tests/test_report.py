"""report.md and the PNG plots, built from realistic synthetic records."""

import numpy as np
import pytest
from matplotlib import image as mpimg

from speechmi_jax.analysis import correlation as corr
from speechmi_jax.analysis import report, results

LAYERS = 5   # Whisper tiny.en: input + 4 blocks


def _synthetic_results():
    """A trained encoder whose phone measures peak at layer 3 and whose speaker MI falls with
    depth, its random-init control (flat, low), and two single-layer baselines."""
    rng = np.random.default_rng(0)
    recs = []

    def add(enc, layer, measure, value, half, **extra):
        recs.append({"encoder": enc, "layer": layer, "measure": measure, "value": float(value),
                     "ci": [float(value - half), float(value + half)],
                     "unit": results.MEASURES[measure].unit, "extra": extra})

    shape = np.array([0.0, 0.45, 0.8, 1.0, 0.9])               # phone content per layer
    for enc, scale in (("whisper_tiny_en", 1.0), ("whisper_tiny_en_random", 0.15)):
        for l in range(LAYERS):
            s = scale * shape[l] + 0.01 * rng.normal()
            add(enc, l, "phone_mi", 1.2 + 2.2 * s, 0.05, ceiling=4.87, accuracy=0.2 + 0.5 * s)
            add(enc, l, "phone_acc", 0.2 + 0.5 * s, 0.01)
            add(enc, l, "ctc_per", 95.0 - 60.0 * s, 2.0)
            add(enc, l, "infonce_next_k", 0.8 + 1.5 * s, 0.04, ceiling=9.0, k=2)
            add(enc, l, "infonce_input", 3.0 - 0.3 * l + 0.02 * rng.normal(), 0.05, ceiling=9.0)
            add(enc, l, "speaker_mi", 3.5 - 0.5 * l * scale, 0.2, ceiling=4.0)
    for enc, s in (("logmel", 0.05), ("mfcc", 0.08)):
        add(enc, 0, "phone_mi", 1.2 + 2.2 * s, 0.05, ceiling=4.87)
        add(enc, 0, "phone_acc", 0.2 + 0.5 * s, 0.01)
        add(enc, 0, "ctc_per", 95.0 - 60.0 * s, 2.0)
        add(enc, 0, "infonce_next_k", 0.8 + 1.5 * s, 0.04, ceiling=9.0, k=2)
        add(enc, 0, "speaker_mi", 3.4, 0.2, ceiling=4.0)
    return results.Results(recs, {"corpus": "bundled", "ci_level": 0.95,
                                  "encoders": {"logmel": {"frame_rate": 100}}})


KW = dict(num_bootstrap=400, num_permutations=2000)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = _synthetic_results()
    results.write_results(out, res)
    path = report.write_report(results.read_results(out), out, **KW)
    return res, out, path.read_text()


def test_files_exist_and_pngs_are_sane_images(written):
    _, out, _ = written
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["layers.png", "scatter_infonce_input.png", "scatter_infonce_next_k.png"]
    for name in pngs:
        raw = (out / name).read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(out / name)
        assert img.ndim == 3 and 300 <= img.shape[0] <= 2500 and 400 <= img.shape[1] <= 3000
        assert img[..., :3].std() > 0.05     # not a blank canvas
    for f in ("results.json", "results.csv", "report.md"):
        assert (out / f).is_file()


def test_tables_hold_the_record_values(written):
    res, _, md = written
    for enc, layer, measure in (("whisper_tiny_en", 3, "phone_mi"), ("logmel", 0, "ctc_per"),
                                ("whisper_tiny_en_random", 1, "infonce_input"),
                                ("mfcc", 0, "speaker_mi")):
        assert report.fmt_ci(res.get(enc, layer, measure)) in md
    # The trained encoder's best phone-MI layer is bold in its table, and named in words.
    best = res.get("whisper_tiny_en", 3, "phone_mi")
    assert f"**{report.fmt_ci(best)}**" in md
    assert f"whisper_tiny_en: layer 3 of 0–4, {report.fmt_ci(best)} bits" in md
    best_per = corr.best_layer(res, "whisper_tiny_en", "ctc_per")
    assert best_per.layer == 3 and f"layer 3 of 0–4, {report.fmt_ci(best_per)} percent" in md
    assert "Ceiling (`extra.ceiling`): whisper_tiny_en 4.870 bits" in md
    assert "- **corpus**: bundled" in md


def test_verdicts_and_correlations_come_from_the_numbers(written):
    res, _, md = written
    comps = report.comparisons_for(res, **KW)
    by = {(c.label_free, c.reference, c.level, c.encoder): c for c in comps}
    # infonce_next_k follows phone content: + with phone MI, - with PER, within the trained
    # encoder and pooled; speaker MI falls with depth, so the within-encoder sign is wrong.
    pooled = by[("infonce_next_k", "phone_mi", "pooled", None)]
    assert pooled.verdict == "agrees" and pooled.primary.n == 12
    assert pooled.primary.r == pytest.approx(
        corr.spearman(*[[p[i].value for p in corr.common_points(res, "infonce_next_k",
                                                                "phone_mi")] for i in (2, 3)]))
    assert by[("infonce_next_k", "ctc_per", "pooled", None)].verdict == "agrees"
    assert by[("infonce_next_k", "ctc_per", "pooled", None)].primary.r < -0.9
    spk = by[("infonce_next_k", "speaker_mi", "within", "whisper_tiny_en")]
    assert spk.primary.r < 0 and spk.verdict in ("disagrees", "inconclusive")
    within = by[("infonce_next_k", "phone_mi", "within", "whisper_tiny_en")]
    assert within.primary.r == pytest.approx(1.0) and within.primary.p_value == pytest.approx(2 / 120)
    # The words in the report carry those numbers.
    assert f"`infonce_next_k` vs `phone_mi` pooled over all (encoder, layer) points: ρ = " \
           f"{pooled.primary.r:+.2f} [{pooled.primary.ci[0]:+.2f}, {pooled.primary.ci[1]:+.2f}]," \
           f" p<0.001, n = 12." in md
    n_agree = sum(c.verdict == "agrees" for c in comps)
    assert f"Of {len(comps)} rank comparisons (Spearman), {n_agree} agree" in md
    # Single-layer baselines never get a within-encoder row.
    assert ("infonce_next_k", "phone_mi", "within", "logmel") not in by
    assert "within logmel" not in md


def test_report_without_label_free_measures_says_so(tmp_path):
    res = _synthetic_results()
    sup = [r for r in res.records if results.MEASURES[r.measure].kind == "supervised"]
    md = report.write_report(sup, tmp_path, **KW).read_text()
    assert "No label-free measure in these results: the claim cannot be checked." in md
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["layers.png"]


def test_a_constant_measure_is_reported_as_undefined(tmp_path):
    recs = [{"encoder": "e", "layer": l, "measure": m, "value": v, "ci": [v - 0.1, v + 0.1]}
            for l in range(4) for m, v in (("infonce_next_k", 1.0), ("phone_mi", 0.5 * l))]
    md = report.write_report(recs, tmp_path, **KW).read_text()
    assert "`infonce_next_k` vs `phone_mi` across the layers of e: ρ = undefined (constant)" in md
    assert "Of 2 rank comparisons (Spearman), 0 agree, 0 disagree and 2 are inconclusive." in md


def test_saturated_label_free_records_are_flagged(tmp_path, written):
    """Label-free records above 90 % of their ceiling are listed and marked ⚠; a supervised
    record near its ceiling is not (a probe at H(Y) is a perfect probe, not a capped critic);
    records written before ``ceiling_fraction`` existed get it from ``ceiling``."""
    _, _, md = written
    assert "None of the 22 label-free records is saturated (highest: `infonce_input`" in md
    recs = [{"encoder": "e", "layer": l, "measure": m, "value": v, "ci": [v - 0.1, v + 0.1],
             "extra": extra}
            for l, (nk, codes) in enumerate(((8.5, 2.0), (8.2, 2.5), (6.0, 3.0)))
            for m, v, extra in (("infonce_next_k", nk, {"ceiling": 9.0}),
                                ("codes_next_k", codes, {"ceiling": 6.0, "ceiling_fraction": codes / 6.0}),
                                ("phone_mi", 4.8, {"ceiling": 4.87}))]
    res = results.Results(recs)
    assert results.ceiling_fraction(res.get("e", 0, "infonce_next_k")) == pytest.approx(8.5 / 9)
    assert results.ceiling_fraction(res.get("e", 0, "phone_mi")) is None
    md = report.write_report(res, tmp_path, **KW).read_text()
    assert "**2 of 6 label-free records are saturated**" in md
    assert "| `infonce_next_k` | e | 0 | 8.500 | 9.000 | 94 % |" in md
    assert "| `infonce_next_k` | e | 1 | 8.200 | 9.000 | 91 % |" in md
    assert f"{report.fmt_ci(res.get('e', 0, 'infonce_next_k'))} ⚠" in md
    assert f"{report.fmt_ci(res.get('e', 2, 'infonce_next_k'))} ⚠" not in md
    assert "⚠" not in md.split("### `phone_mi`")[1].split("###")[0]


def test_floor_section_decides_from_the_intervals_of_the_measures_present():
    from speechmi_jax.analysis import floor

    def rec(enc, measure, value, half):
        return {"encoder": enc, "layer": 0, "measure": measure, "value": value,
                "ci": [value - half, value + half], "unit": results.MEASURES[measure].unit, "extra": {}}

    phone = [rec("melhubert-4x256", "phone_mi", 2.8, 0.05), rec("melhubert-4x256@step0", "phone_mi", 2.5, 0.05),
             rec("logmel-stack4", "phone_mi", 2.6, 0.05), rec("logmel", "phone_mi", 2.0, 0.05)]
    meta = {"ci_level": 0.95}
    text = "\n".join(floor.section(results.Results(phone, meta)))
    assert text.count("| **beats** |") == 3 and "beats every floor on `phone_mi`." in text
    # PER within the initialisation's interval (and lower is better): that floor is not beaten.
    per = [rec("melhubert-4x256", "ctc_per", 60.0, 5.0), rec("melhubert-4x256@step0", "ctc_per", 66.0, 5.0),
           rec("logmel-stack4", "ctc_per", 80.0, 3.0), rec("logmel", "ctc_per", 90.0, 2.0)]
    text = "\n".join(floor.section(results.Results(phone + per, meta)))
    assert "| `ctc_per` | 60.0 [55.0, 65.0] (layer 0) | 66.0 [61.0, 71.0] (layer 0) | +6.00 points | **within CIs** |" in text
    assert "does not beat `melhubert-4x256@step0` on `ctc_per` (within CIs)." in text
    # logmel-past8 (frames t - 8 .. t) is a floor of the causal model (APC) alone.
    past = [rec("logmel-past8", "phone_mi", 2.2, 0.05), rec("melapc-4x256", "phone_mi", 2.45, 0.05),
            rec("melapc-4x256@step0", "phone_mi", 2.3, 0.05)]
    table = floor.rows(results.Results(phone + past, meta))
    assert "8 frames before" in "\n".join(floor.section(results.Results(phone + past, meta)))
    assert "8 frames before" not in "\n".join(floor.section(results.Results(phone, meta)))
    assert [r["floor"] for r in table if r["model"] == "melapc-4x256"] == [
        "melapc-4x256@step0", "logmel-stack4", "logmel-past8", "logmel"]
    assert [r["floor"] for r in table if r["model"] == "melhubert-4x256"] == [
        "melhubert-4x256@step0", "logmel-stack4", "logmel"]
    assert [r["verdict"] for r in table if r["model"] == "melapc-4x256"] == [
        "beats", "below", "beats", "beats"]


def test_zoo_floor_script_puts_each_runs_best_layers_side_by_side(tmp_path):
    """``experiments/zoo_floor.py LABEL=results.json ...``: per encoder of the first run, its best
    layer in each run (highest phone MI, lowest PER), '-' where a run lacks the encoder."""
    import subprocess
    import sys
    from pathlib import Path

    def rec(enc, layer, measure, value):
        return {"encoder": enc, "layer": layer, "measure": measure, "value": value,
                "ci": [value - 0.1, value + 0.1], "unit": results.MEASURES[measure].unit, "extra": {}}

    a = [rec("m", 0, "phone_mi", 2.0), rec("m", 1, "phone_mi", 2.5), rec("m", 0, "ctc_per", 60.0),
         rec("m", 1, "ctc_per", 70.0), rec("base", 0, "phone_mi", 1.5), rec("base", 0, "ctc_per", 90.0)]
    b = [rec("m", 0, "phone_mi", 1.0), rec("m", 1, "phone_mi", 0.5), rec("m", 0, "ctc_per", 80.0),
         rec("m", 1, "ctc_per", 75.0)]
    for name, recs in (("a", a), ("b", b)):
        results.write_results(tmp_path / name, recs, {"ci_level": 0.95})
    script = Path(__file__).parents[1] / "experiments" / "zoo_floor.py"
    out = subprocess.run([sys.executable, str(script), f"x={tmp_path / 'a'}", f"y={tmp_path / 'b'}"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == ("| encoder | x: `phone_mi` (bits) | x: `ctc_per` (%) | y: `phone_mi` (bits) "
                      "| y: `ctc_per` (%) |")
    assert out[2] == ("| m | 2.500 [2.400, 2.600] (layer 1) | 60.0 [59.9, 60.1] (layer 0) "
                      "| 1.000 [0.900, 1.100] (layer 0) | 75.0 [74.9, 75.1] (layer 1) |")
    assert out[3] == "| base | 1.500 [1.400, 1.600] (layer 0) | 90.0 [89.9, 90.1] (layer 0) | - | - |"
