"""Results schema (validation, JSON/CSV round trip) and correlations against scipy.stats."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from speechmi_jax.analysis import correlation as corr
from speechmi_jax.analysis import results as res_mod
from speechmi_jax.analysis.results import Results, ResultsError


# ------------------------------------------------------------------------------ correlations

@pytest.mark.parametrize("seed", range(6))
def test_coefficients_match_scipy_on_random_data_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    x = rng.integers(0, 6, size=n).astype(float)           # many ties
    y = x + rng.integers(-3, 4, size=n)
    if seed % 2:
        x, y = rng.normal(size=n), rng.normal(size=n)      # no ties
    assert corr.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert corr.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert corr.kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y)[0], abs=1e-12)


def test_rankdata_matches_scipy_average_ranks_batched():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=(7, 11)).astype(float)
    np.testing.assert_allclose(corr.rankdata(x), stats.rankdata(x, axis=-1), atol=0)


def test_hand_cases_with_ties():
    x, y = [1, 2, 2, 3], [1, 2, 3, 4]
    # 5 concordant pairs, 0 discordant, 1 pair tied in x: 5 / sqrt(5 * 6).
    assert corr.kendall_tau_b(x, y) == pytest.approx(5 / math.sqrt(30))
    # Ranks x = (1, 2.5, 2.5, 4): 4.5 / sqrt(4.5 * 5).
    assert corr.spearman(x, y) == pytest.approx(4.5 / math.sqrt(22.5))
    assert corr.spearman([1, 2, 3, 4], [10, 9, 3, 1]) == pytest.approx(-1.0)
    assert corr.kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert math.isnan(corr.pearson([1, 1, 1], [1, 2, 3]))
    assert math.isnan(corr.kendall_tau_b([1, 2, 3], [5, 5, 5]))


def test_exact_permutation_p_for_a_perfect_ranking():
    # n = 4: |rho| = 1 for the identity and the reversal, 2 of 4! = 24 permutations.
    c = corr.correlate([1, 2, 3, 4], [2, 4, 6, 9], "spearman", num_bootstrap=200)
    assert c.exact_p and c.r == pytest.approx(1.0)
    assert c.p_value == pytest.approx(2 / 24)
    c = corr.correlate([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], "kendall", num_bootstrap=200)
    assert c.r == pytest.approx(-1.0) and c.p_value == pytest.approx(2 / 120)


def test_monte_carlo_p_and_bootstrap_ci_are_sane():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = 0.8 * x + 0.6 * rng.normal(size=40)
    c = corr.correlate(x, y, "pearson", num_bootstrap=1000, num_permutations=2000)
    assert not c.exact_p and c.p_value == pytest.approx(1 / 2001)
    assert c.ci[0] < c.r < c.ci[1] and c.excludes_zero()
    # The bootstrap CI of Pearson's r at n = 40 is close to Fisher's z interval.
    z, se = np.arctanh(c.r), 1 / math.sqrt(40 - 3)
    lo, hi = np.tanh(z - 1.96 * se), np.tanh(z + 1.96 * se)
    assert abs(c.ci[0] - lo) < 0.1 and abs(c.ci[1] - hi) < 0.1
    # Independent data: p is not small, CI covers 0.
    c0 = corr.correlate(x, rng.normal(size=40), "spearman", num_bootstrap=500,
                        num_permutations=2000)
    assert c0.p_value > 0.01 and c0.ci[0] < 0 < c0.ci[1]


def test_propagating_point_uncertainty_widens_the_ci():
    x = np.arange(8.0)
    y = x + np.array([0.1, -0.2, 0.05, 0.0, 0.2, -0.1, 0.15, -0.05])
    narrow = corr.correlate(x, y, "spearman", num_bootstrap=1000, seed=1)
    wide = corr.correlate(x, y, "spearman", y_ci=np.stack([y - 3, y + 3], 1),
                          num_bootstrap=1000, seed=1)
    assert not narrow.propagated and wide.propagated
    assert wide.ci[1] - wide.ci[0] > narrow.ci[1] - narrow.ci[0] + 0.2


def test_correlate_errors():
    with pytest.raises(ValueError, match="at least 3 points"):
        corr.correlate([1, 2], [1, 2])
    with pytest.raises(ValueError, match="method 'tau'"):
        corr.correlate([1, 2, 3], [1, 2, 3], "tau")


# ------------------------------------------------------------------------------ results schema

def _rec(enc, layer, measure, value, half=0.1, **extra):
    return {"encoder": enc, "layer": layer, "measure": measure, "value": value,
            "ci": [value - half, value + half], "unit": res_mod.MEASURES[measure].unit,
            "extra": extra}


def test_roundtrip_json_and_csv(tmp_path):
    recs = [_rec("enc_a", l, "phone_mi", 1.0 + l, ceiling=4.5) for l in range(3)]
    recs.append(_rec("enc_a", 0, "ctc_per", 45.5, 2.0))
    meta = {"ci_level": 0.9, "config": {"steps": 10}}
    jpath, cpath = res_mod.write_results(tmp_path, recs, meta)
    back = res_mod.read_results(tmp_path)
    assert back.metadata == meta and back.ci_level == 0.9
    assert [r.to_dict() for r in back.records] == [res_mod.make_record(r).to_dict() for r in recs]
    from_csv = res_mod.read_results(cpath)
    assert from_csv.records == back.records
    doc = json.loads(jpath.read_text())
    assert doc["schema"] == res_mod.SCHEMA and doc["records"][0]["ci"] == [0.9, 1.1]
    assert cpath.read_text().splitlines()[0] == ",".join(res_mod.CSV_COLUMNS)
    assert back.get("enc_a", 2, "phone_mi").extra == {"ceiling": 4.5}
    assert [r.layer for r in back.series("enc_a", "phone_mi")] == [0, 1, 2]
    assert back.measures() == ["phone_mi", "ctc_per"]


def test_first_difference_relative_scales_large_numbers_only():
    a = {"bound": 300.0, "bits": [0.5, 2.0], "name": "apc"}
    assert res_mod.first_difference(a, dict(a, bound=300.0015), "m", 1e-5, relative=True) is None
    assert res_mod.first_difference(a, dict(a, bound=300.0015), "m", 1e-5) == pytest.approx(
        ("m.bound", 0.0015))
    # under 1 the difference stays absolute: 2e-5 on 0.5 is not 4e-5 relative, but still > 1e-5
    field, d = res_mod.first_difference(a, dict(a, bits=[0.50002, 2.0]), "m", 1e-5, relative=True)
    assert field == "m.bits[0]" and d == pytest.approx(2e-5)
    assert res_mod.first_difference(a, dict(a, name="hubert"), relative=True)[0] == ".name"


def test_compare_runs_names_each_difference(tmp_path, capsys):
    from speechmi_jax import cli
    recs = [_rec("enc_a", l, "phone_mi", 1.0 + l, ceiling=4.5, step=10) for l in range(3)]
    res_mod.write_results(tmp_path / "a", recs)
    res_mod.write_results(tmp_path / "same", [dict(r) for r in recs])
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "same")]) == 0
    assert "3 records in both: 3 equal, 0 differ; 0 only in the first, 0 only in the second" in \
        capsys.readouterr().out
    # one ulp in a CI end, an extra field, a missing record: each is named
    changed = [dict(r, extra=dict(r["extra"])) for r in recs[:2]]
    changed[0]["ci"] = [np.nextafter(changed[0]["ci"][0], 0.0), changed[0]["ci"][1]]
    changed[1]["extra"]["step"] = 11
    res_mod.write_results(tmp_path / "b", changed + [_rec("enc_b", 0, "phone_mi", 1.0)])
    comp = res_mod.compare_results(res_mod.read_results(tmp_path / "a"), res_mod.read_results(tmp_path / "b"))
    assert comp.same == [] and not comp.identical
    assert [(k, f) for k, f, _ in comp.differ] == [(("enc_a", 0, "phone_mi"), "record.ci[0]"),
                                                  (("enc_a", 1, "phone_mi"), "record.extra.step")]
    assert comp.only_a == [("enc_a", 2, "phone_mi")] and comp.only_b == [("enc_b", 0, "phone_mi")]
    loose = res_mod.compare_results(res_mod.read_results(tmp_path / "a"),
                                    res_mod.read_results(tmp_path / "b"), tolerance=2.0)
    assert len(loose.same) == 2 and not loose.differ
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "differs: enc_a layer 1 phone_mi: record.extra.step" in capsys.readouterr().out
    # per measure: layer 0 moved out of its old CI, enc_b is new, layers 1 and 2 are unchanged
    moved = [dict(recs[0], value=recs[0]["value"] + 0.5)] + recs[1:]
    res_mod.write_results(tmp_path / "c", moved + [_rec("enc_b", 0, "phone_mi", 1.0)])
    assert res_mod.measure_summary(res_mod.read_results(tmp_path / "a"),
                                   res_mod.read_results(tmp_path / "c")) == [
        {"measure": "phone_mi", "records": 4, "identical": 2, "max_abs_diff": 0.5,
         "outside_old_ci": 1, "missing_before": 1}]


@pytest.mark.parametrize("change,message", [
    ({"measure": "phone_info"}, "record 0: unknown measure 'phone_info'"),
    ({"unit": "nats"}, "record 0: measure 'phone_mi' is in 'bits', got unit 'nats'"),
    ({"layer": -1}, "record 0: 'layer' must be an integer >= 0"),
    ({"layer": 1.5}, "'layer' must be an integer"),
    ({"value": float("nan")}, "record 0: 'value': expected a finite number"),
    ({"ci": [2.0, 1.0]}, "'ci' lower end 2.0 exceeds upper end 1.0"),
    ({"ci": [1.0]}, "'ci' must be \\[lo, hi\\]"),
    ({"encoder": ""}, "'encoder' must be a non-empty string"),
    ({"seed": 3}, "unknown keys \\['seed'\\]"),
    ({"extra": {"f": object()}}, "'extra': not JSON-serializable"),
])
def test_validation_errors_name_the_record_and_key(change, message):
    rec = {**_rec("enc", 0, "phone_mi", 1.0), **change}
    with pytest.raises(ResultsError, match=message):
        Results([rec])


def test_missing_key_duplicates_and_bad_files(tmp_path):
    rec = _rec("enc", 0, "phone_mi", 1.0)
    del rec["ci"]
    with pytest.raises(ResultsError, match="record 0: missing key 'ci'"):
        Results([rec])
    with pytest.raises(ResultsError, match="record 1: duplicate of record 0"):
        Results([_rec("enc", 0, "phone_mi", 1.0), _rec("enc", 0, "phone_mi", 2.0)])
    (tmp_path / "results.json").write_text('{"schema": "other/1", "records": []}')
    with pytest.raises(ResultsError, match="results.json: expected schema"):
        res_mod.read_results(tmp_path)
    with pytest.raises(ResultsError, match="no such results file"):
        res_mod.read_results(tmp_path / "nope")


def test_unit_defaults_from_the_registry_and_numpy_ints_are_layers():
    rec = _rec("enc", 0, "ctc_per", 30.0)
    del rec["unit"]
    rec["layer"] = np.int64(4)
    r = res_mod.make_record(rec)
    assert r.unit == "percent" and r.layer == 4 and isinstance(r.layer, int)


# ------------------------------------------------------------------------------ levels

def _table():
    """Two 5-layer encoders and one single-layer baseline; measure y = 2 x, z = -x."""
    recs = []
    for enc, xs in (("a", [0.1, 0.5, 0.9, 0.7, 0.3]), ("b", [0.2, 0.25, 0.3, 0.35, 0.4]),
                    ("base", [0.05])):
        for layer, x in enumerate(xs):
            recs += [_rec(enc, layer, "infonce_next_k", x, 0.01),
                     _rec(enc, layer, "phone_mi", 2 * x, 0.01),
                     _rec(enc, layer, "ctc_per", 100 * (1 - x), 1.0)]
    return Results(recs, {})


def test_levels_within_pooled_and_across():
    res = _table()
    w = corr.within_encoder(res, "infonce_next_k", "phone_mi", num_bootstrap=300)
    assert set(w) == {"a", "b"}          # the baseline has a single layer
    assert w["a"].r == pytest.approx(1.0) and w["a"].n == 5
    p = corr.pooled(res, "infonce_next_k", "ctc_per", "kendall", num_bootstrap=300)
    assert p.n == 11 and p.r == pytest.approx(-1.0)
    # Best layers: a -> layer 2 (0.9), b -> layer 4 (0.4), base -> 0.05; PER best = lowest.
    assert corr.best_layer(res, "a", "ctc_per").layer == 2
    assert corr.encoder_summary(res, "b", "phone_mi", "best")[0] == pytest.approx(0.8)
    assert corr.encoder_summary(res, "a", "phone_mi", "mean")[0] == pytest.approx(1.0)
    x = corr.across_encoders(res, "infonce_next_k", "ctc_per", "spearman", num_bootstrap=300)
    assert x.n == 3 and x.r == pytest.approx(-1.0) and x.p_value == pytest.approx(2 / 6)


# ------------------------------------------------------------------------------ record builders

def test_records_are_built_from_estimates_with_their_ceilings():
    """The contract of estimators.api.MIEstimate / ctc.CTCLayerResult (attribute names only)."""
    from types import SimpleNamespace as NS
    est = [NS(layer=np.int64(l), bits=np.float32(1.0 + l), ci=(0.9 + l, 1.1 + l), ceiling_bits=4.2,
              lr=None, l2=1e-3, step=np.int32(50), n_test=120, accuracy=0.5, accuracy_ci=(0.4, 0.6))
           for l in range(2)]
    recs = res_mod.estimate_records("enc", est, "phone_mi", "phone_acc", speakers=["a", "b"])
    assert [(r["layer"], r["measure"]) for r in recs] == [(0, "phone_mi"), (0, "phone_acc"),
                                                          (1, "phone_mi"), (1, "phone_acc")]
    assert recs[2]["extra"] == {"ceiling": 4.2, "l2": 1e-3, "step": 50, "n_test": 120,
                                "accuracy": 0.5, "speakers": ["a", "b"]}  # lr None left out
    assert recs[1]["unit"] == "fraction" and recs[1]["ci"] == [0.4, 0.6]
    json.dumps(recs, allow_nan=False)  # numpy scalars became Python numbers
    ctc = [NS(layer=3, per=41.5, ci=(39.0, 44.0), lr=3e-3, step=400, dev_per=40.0,
              num_test_utts=30, num_test_phones=900)]
    (rec,) = res_mod.ctc_records("enc", ctc)
    assert rec["measure"] == "ctc_per" and rec["unit"] == "percent" and rec["value"] == 41.5
    assert rec["extra"] == {"lr": 3e-3, "step": 400, "dev_per": 40.0, "num_test_utts": 30,
                            "num_test_phones": 900}
    runs = [NS(**vars(ctc[0]), run_pers=(40.0, 43.0), run_choices=((3e-3, 400), (3e-2, 200)))]
    (rec,) = res_mod.ctc_records("enc", runs)
    assert rec["extra"] == {"lr": 3e-3, "step": 400, "dev_per": 40.0, "num_test_utts": 30,
                            "num_test_phones": 900, "run_pers": [40.0, 43.0],
                            "run_lrs": [3e-3, 3e-2], "run_steps": [400, 200]}
    bad = [NS(**{**vars(est[0]), "bits": float("nan")})]
    with pytest.raises(ResultsError, match="enc layer 0 phone_mi: 'value': expected a finite"):
        res_mod.estimate_records("enc", bad, "phone_mi")
