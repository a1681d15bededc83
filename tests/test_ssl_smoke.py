"""Every pretraining objective end to end on the bundled corpus (one device): data2vec without
its anti-collapse safeguards collapses and the guard fires, with them it does not; the guard
watches VQ-APC's codebook too; ``speechmi pretrain --smoke`` runs VQ-APC, HuBERT iterations 1
and 2 and wav2vec 2.0, and the exported models load with ``smi.load_encoder``. APC's population
runs: test_ssl_train.py."""

import json
import warnings

import numpy as np
import pytest

import speechmi_jax as smi
from speechmi_jax import cli
from speechmi_jax.ssl import models, trainer



def _data2vec(tmp_path, name, anti_collapse: bool):
    # On the conv-stem backbone, where a teacher that is the student itself collapses within 30
    # steps; the guard is the same for every backbone.
    _, config = trainer.load_pretrain_config("data2vec", [
        "model.backbone=conv",
        "steps=30", "eval_every=10", "checkpoint_every=30", "optim.warmup_steps=5", "population.lr=[0.003]",
        f"data2vec.normalize_targets={anti_collapse}", f"data2vec.ema_decay={0.995 if anti_collapse else 0.0}",
    ], smoke=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.pretrain(config, tmp_path / name, progress=False)
    fired = [w for w in caught if issubclass(w.category, trainer.CollapseWarning)]
    return trainer.read_metrics(tmp_path / name / "metrics.jsonl"), fired


def test_learned_target_collapses_without_safeguard_and_guard_fires(tmp_path):
    # Off: no target normalisation, the teacher is the student itself (EMA decay 0).
    recs, fired = _data2vec(tmp_path, "off", anti_collapse=False)
    assert recs[0]["dev_target_var"] > 0.1 and not recs[0]["collapse"]
    assert recs[-1]["dev_target_var"] < 1e-2 and recs[-1]["collapse"]
    assert fired and "dev target variance" in str(fired[0].message)
    # On: instance-normalised targets of an EMA teacher keep their variance.
    recs, fired = _data2vec(tmp_path, "on", anti_collapse=True)
    assert not fired and not any(r["collapse"] for r in recs)
    assert min(r["dev_target_var"] for r in recs) > 0.5
    assert smi.load_encoder(tmp_path / "on" / "model").num_layers == 2  # exported, loads


def test_collapse_guard_watches_the_vq_apc_codebook_from_the_end_of_warm_up():
    # The zoo's APC recipe as VQ-APC with transformers' quantizer init ended at dev perplexity
    # 1.00 (one code, bound 0 bits); the fixed init dipped to 1.9 during warm-up and recovered.
    _, config = trainer.load_pretrain_config("vqapc", smoke=True)
    arch = trainer.backbone(config).arch
    warm = config.optim.warmup_steps
    rec = dict(member=0, seed=0, lr=1e-3, dev_h_target_bits=-225.5, dev_bound_bits=0.0)
    vq, plain = models.APCTask(arch, vq_codes=config.model.vq_codes), models.APCTask(arch)
    with pytest.warns(trainer.CollapseWarning, match="codebook is collapsing: dev codebook perplexity 1 <"):
        assert trainer._collapse_guard(vq, config, dict(rec, step=warm, dev_perplexity=1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not trainer._collapse_guard(vq, config, dict(rec, step=warm - 1, dev_perplexity=1.0))
        assert not trainer._collapse_guard(vq, config, dict(rec, step=warm, dev_perplexity=9.4))
        assert not trainer._collapse_guard(plain, config, dict(rec, step=warm, dev_perplexity=1.0))


def test_pretrain_smoke_every_objective_exports_a_loadable_encoder(tmp_path):
    # APC (test_ssl_train.py) and data2vec (the collapse test) train and load there.
    # wav2vec 2.0 on the wav2vec2-family conv stem: the transformers-layout export of a pretrained
    # model; the others on the zoo's log-mel backbone.
    for name in ("vqapc", "hubert", "wav2vec2"):
        out = tmp_path / name
        conv = ["--set", "model.backbone=conv"] if name == "wav2vec2" else []
        assert cli.main(["pretrain", name, "--smoke", "--out", str(out), *conv]) == 0
        model_type = json.loads((out / "model" / "config.json").read_text())["model_type"]
        assert model_type == ("wav2vec2" if conv else "speechmi-logmel-transformer"), model_type
        last = trainer.read_metrics(out / "metrics.jsonl")[-1]
        assert np.isfinite([last["dev_loss"], last["dev_bound_bits"], last["dev_h_target_bits"]]).all()
        if name == "vqapc":
            assert 1.0 <= last["dev_perplexity"] <= 32.0
        if name == "wav2vec2":  # InfoNCE bound <= log2(K + 1); 2 groups x 32 codes
            assert last["dev_bound_bits"] <= np.log2(11) and 2.0 <= last["dev_perplexity"] <= 64.0
        if name == "hubert":
            assert 0.0 < last["dev_h_target_bits"] <= np.log2(50) and "dev_masked_acc" in last
            assert json.loads((out / "model" / "config.json").read_text())["causal"] is False
        enc = smi.load_encoder(out / "model")
        hidden = enc(np.zeros((1, 16000), np.float32), [16000]).hidden_states
        assert hidden.shape[0] == enc.num_layers + 1 and np.isfinite(np.asarray(hidden)).all()
    # HuBERT iteration 2: k-means of a middle layer of the iteration-1 model. Its targets'
    # entropy differs from iteration 1's, yet the step compiled for iteration 1 is reused (the
    # entropy is a traced hyperparameter) and reports iteration 2's own entropy.
    out = tmp_path / "hubert-it2"
    misses = trainer.compiled.cache_info().misses
    assert cli.main(["pretrain", "hubert", "--smoke", "--out", str(out), "--set",
                     f"targets.source={tmp_path / 'hubert' / 'model'}", "--set", "targets.layer=1"]) == 0
    assert trainer.compiled.cache_info().misses == misses
    h1, h2 = (float(np.load(tmp_path / d / "targets.npz")["h_target_bits"]) for d in ("hubert", "hubert-it2"))
    assert abs(h1 - h2) > 1e-3
    for d, h in (("hubert", h1), ("hubert-it2", h2)):
        np.testing.assert_allclose(trainer.read_metrics(tmp_path / d / "metrics.jsonl")[-1]["dev_h_target_bits"],
                                   h, rtol=1e-5)
