"""The SSL model-selection analysis (analysis/selection.py) on records over zoo checkpoint names,
with values built so that every figure is known in advance. The zoo is a copy of the shipped
one's cards, four models of four checkpoints each (the package ships too few checkpoints for a
rank verdict), each checkpoint with its own weights file except the step 0 that two runs of
one architecture and seed share."""

import itertools
import json
import shutil

import numpy as np
import pytest

from speechmi_jax import zoo
from speechmi_jax.analysis import report, selection
from speechmi_jax.analysis.results import Results, record

LAYERS = 4
STEPS = [0, 100, 300, 2000]


@pytest.fixture(autouse=True)
def test_zoo(tmp_path, monkeypatch):
    """Four models (two per shipped card: ``<name>`` and ``<name>-b``, the second sharing the
    first's step 0) x four checkpoints."""
    root = tmp_path / "zoo"
    for name in [n for n in zoo.names()]:
        card = zoo.card(name)
        for copy in (name, f"{name}-b"):
            out = root / copy
            out.mkdir(parents=True)
            c = dict(card, name=copy, checkpoints=STEPS, steps=STEPS[-1],
                     checkpoint_dev={str(s): card["final_dev"] for s in STEPS})
            (out / "card.json").write_text(json.dumps(c))
            for s in STEPS:
                (out / f"step{s}").mkdir()
                shutil.copy(zoo.ZOO_DIR / name / "step0" / "config.json", out / f"step{s}" / "config.json")
                weights = f"{name} step0" if s == 0 else f"{copy} step{s}"
                (out / f"step{s}" / "model.safetensors").write_text(weights)
    monkeypatch.setattr(zoo, "ZOO_DIR", root)


def _records(good_layer, per_of_quality, lf_of_quality):
    """Per zoo checkpoint a quality q (rises with step, differs by model); layer ``good_layer(q)``
    has the best PER and phone MI; the label-free measure peaks at ``lf_layer``."""
    recs = []
    for mi, name in enumerate(zoo.names()):
        for si, step in enumerate(zoo.steps(name)):
            enc = f"{name}@step{step}"
            q = si + 0.37 * mi
            best = good_layer(q)
            for l in range(LAYERS):
                d = abs(l - best)
                per = per_of_quality(q) + 5.0 * d
                phone = 0.3 * q - 0.2 * d
                lf = lf_of_quality(q) - 0.1 * d
                for m, v in (("ctc_per", per), ("phone_mi", phone), ("codes_next_k", lf)):
                    w = 0.01 if m != "ctc_per" else 0.5
                    recs.append(record(enc, l, m, v, (v - w, v + w), ceiling=10.0) if m == "codes_next_k"
                                else record(enc, l, m, v, (v - w, v + w)))
    return Results(recs)


def test_points_dedupe_shared_initialisations():
    res = _records(lambda q: 2, lambda q: 90 - 5 * q, lambda q: q)
    pts = selection.zoo_points(res)
    labels = [p.label for p in pts]
    # <name> and <name>-b share their step 0: one point each
    step0 = [l for l in labels if l.endswith("@step0")]
    digests = {zoo.weights_digest(l) for l in step0}
    assert len(step0) == len(digests) < len(zoo.names())
    assert len(pts) == len({zoo.weights_digest(e) for e in res.encoders()})


def test_perfect_label_free_ranking_agrees_and_reversed_disagrees():
    res = _records(lambda q: 2, lambda q: 90 - 5 * q, lambda q: q)
    pts = selection.zoo_points(res)
    s = selection.selection(res, pts, "codes_next_k", "ctc_per", num_bootstrap=200)
    assert s.coefs["kendall"].r == pytest.approx(-1.0)
    assert s.verdict == "agrees"
    assert all(layer == 2 for _, layer, _, _ in s.rows)
    bad = _records(lambda q: 2, lambda q: 90 - 5 * q, lambda q: -q)
    s = selection.selection(bad, selection.zoo_points(bad), "codes_next_k", "ctc_per",
                            num_bootstrap=200)
    assert s.coefs["kendall"].r == pytest.approx(1.0)
    assert s.verdict == "disagrees"


def test_layer_agreement_counts_and_chance():
    # the best-PER layer moves with quality (0..3); the label-free measure always peaks where
    # PER does except that the records put lf's best at the same layer: all within, same layer
    res = _records(lambda q: int(q) % LAYERS, lambda q: 50.0, lambda q: q)
    picks = selection.layer_agreement(res, selection.zoo_points(res), "codes_next_k")
    assert all(p.within and p.label_free_layer == p.reference_layer for p in picks)
    for p in picks:   # layers 0..3, tolerance 1: 2/4 at the ends, 3/4 inside
        assert p.chance == (0.5 if p.reference_layer in (0, LAYERS - 1) else 0.75)


def test_chance_tail_matches_enumeration():
    q = [0.5, 0.75, 0.75, 0.5, 0.9]
    for hits in range(len(q) + 1):
        brute = sum(np.prod([qi if o else 1 - qi for qi, o in zip(q, outcome)])
                    for outcome in itertools.product([0, 1], repeat=len(q)) if sum(outcome) >= hits)
        assert selection.chance_tail(q, hits) == pytest.approx(brute)


def test_report_leads_with_selection_and_table(tmp_path):
    res = _records(lambda q: 2, lambda q: 90 - 5 * q, lambda q: q)
    text = report.write_report(res, tmp_path, num_bootstrap=100, num_permutations=500).read_text()
    sec = text.index("## SSL model selection")
    assert sec < text.index("## What holds")
    assert "(d) APC vs MLM" in text
    # the table shows each model's own logged bound at its final checkpoint
    for name in zoo.names():
        bound = zoo.card(name)["checkpoint_dev"][str(zoo.steps(name)[-1])]["bound_bits"]
        assert f"| {name}@step{zoo.steps(name)[-1]} |" in text and f"{bound:.2f}" in text
    assert "(c) The SSL objective's logged dev bound" in text


def test_few_points_say_no_verdict_is_possible():
    full = _records(lambda q: 2, lambda q: 90 - 5 * q, lambda q: q)
    keep = {f"{n}@step{s}" for n in zoo.names()[:3] for s in zoo.steps(n)[-1:]}
    res = Results([r for r in full.records if r.encoder in keep])
    text = "\n".join(selection.section(res, num_bootstrap=100, num_permutations=500))
    assert "3 (model, checkpoint) points" in text
    assert "smallest two-sided permutation p is 0.333" in text
    assert "**inconclusive**" in text and "**agrees**" not in text


def test_summary_puts_the_best_selector_first_and_survives_json():
    """Two label-free measures, one that ranks the points as PER does (codes_next_k) and one
    that ranks them backwards (rankme): the summary's table must list codes_next_k first with
    "agrees" and rankme with "disagrees"; the spread is the records' own. Breaks if the sort
    key ignores the expected sign, or the spread reads the wrong layer."""
    res = _records(lambda q: 2, lambda q: 90 - 5 * q, lambda q: q)
    back = [record(r.encoder, r.layer, "rankme", -r.value + 100.0, (-r.value + 99.9, -r.value + 100.1))
            for r in res.records if r.measure == "codes_next_k"]
    res = Results(list(res.records) + back)
    s = json.loads(json.dumps(selection.summary(res, num_bootstrap=100, num_permutations=500)))
    rows = selection.summary_table(s)
    body = [r for r in rows[2:] if r.startswith("| `")]
    assert body[0].startswith("| `codes_next_k`") and "agrees" in body[0]
    assert any(r.startswith("| `rankme`") and "disagrees" in r for r in body)
    assert body[-1].startswith("| `ssl_bound`") or body[-2].startswith("| `ssl_bound`")
    pers = [r.value for r in res.records if r.measure == "ctc_per" and r.layer == 2
            and r.encoder in {p.encoder for p in selection.zoo_points(res)}]
    assert s["spread"]["ctc_per"]["min"] == pytest.approx(min(pers))
    assert s["spread"]["ctc_per"]["spread"] == pytest.approx(max(pers) - min(pers))
    assert s["spread"]["ctc_per"]["median_ci_width"] == pytest.approx(1.0)
    layers = next(m for m in s["measures"] if m["measure"] == "codes_next_k")["layers"]
    assert layers["within"] == layers["n"] == len(selection.zoo_points(res))


def test_equal_compute_pairs_the_families_at_each_size_and_step():
    """Both shipped families have one size (4x256); each (size, step) row holds both families'
    mean best PER over their two models (``<name>`` and ``<name>-b``). Breaks if rows mix steps
    or families, or average the wrong layer."""
    res = _records(lambda q: 2, lambda q: 90 - 5 * q, lambda q: q)
    pts = selection.zoo_points(res)
    rows = selection.equal_compute(res, pts)
    assert [r["step"] for r in rows] == sorted({p.step for p in pts})
    for r in rows:
        assert r["size"] == "4x256"
        fams = [k for k in r if k not in ("size", "step")]
        assert len(fams) == 2
        for fam in fams:
            mine = [p for p in pts if p.step == r["step"]
                    and selection.table1.objective(zoo.card(p.model)["objective"]).family == fam]
            want = np.mean([res.get(p.encoder, 2, "ctc_per").value for p in mine])
            assert r[fam]["seeds"] == len(mine) and r[fam]["per"] == pytest.approx(want)
