"""Plug-ins by name, each registered from a file outside the package (tests/toy_plugins.py), no
package file touched: an SSL objective trains through ``speechmi pretrain --smoke`` with its
Table 1 row; a measure and an encoder family run together through ``speechmi run --smoke``; an
unregistered name is refused naming the registered ones."""

import contextlib
import io
import json

import numpy as np
import pytest

import toy_plugins
from speechmi_jax import cli, measures, pipeline
from speechmi_jax.configs.loader import load_config
from speechmi_jax.encoders import registry as encoders
from speechmi_jax.features import load_features
from speechmi_jax.ssl import table1, trainer

CONFIG = '''
import toy_plugins  # registers the objective
from speechmi_jax.configs.pretrain import common


def get_config(arg=""):
    c = common.base_config()
    c.objective = "toy_next_frame"
    c.population.shift = [1]
    return common.finish(c, arg, "toy")
'''


def test_objective_plugin_trains_through_the_cli(tmp_path, capsys):
    path = tmp_path / "toy.py"
    path.write_text(CONFIG)
    assert cli.main(["pretrain", str(path), "--smoke", "--out", str(tmp_path / "run")]) == 0
    assert table1.objective("toy_next_frame").family == "APC"
    recs = trainer.read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert recs[-1]["step"] == 4 and np.isfinite(recs[-1]["dev_loss"])
    cfg = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert cfg["causal"] is True  # the row says causal: the backbone follows it
    capsys.readouterr()
    path.write_text(CONFIG.replace('"toy_next_frame"', '"not_registered"'))
    assert cli.main(["pretrain", str(path), "--smoke", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "'not_registered'" in err and "toy_next_frame" in err and "apc" in err


RUN_CONFIG = '''
import toy_plugins  # registers the measure and the encoder family
from speechmi_jax.configs import arg as config_arg
from speechmi_jax.configs import base


def get_config(arg=""):
    c = base.base_config()
    c.encoders = [{encoder!r}]
    c.measures = ["toy_active_fraction"]
    c.progress = False
    if config_arg.is_smoke(arg, "toy run"):
        c.max_utterances_per_split = 3
        c.spectral.num_bootstrap = 50
    return c
'''


def _part(run, encoder):
    return run / "parts" / f"{measures.file_name(encoder)}__toy_active_fraction.json"


def test_measure_and_encoder_family_plugins_run_through_the_cli(tmp_path):
    """The toy measure on the toy encoder's 3 hidden states: one record per layer in the
    registered unit, equal to the share computed here from the cached features; the saved part
    is reused by the same command, and its key changes with one of the measure's settings."""
    model = str(toy_plugins.write_toy_checkpoint(tmp_path / "toy-model"))
    config = tmp_path / "toy_run.py"
    config.write_text(RUN_CONFIG.format(encoder=model))
    run = tmp_path / "run"
    command = ["run", str(config), "--smoke", "--out", str(run)]
    assert cli.main(command) == 0
    recs = json.loads((run / "results.json").read_text())["records"]
    assert [(r["encoder"], r["layer"], r["measure"], r["unit"]) for r in recs] == [
        (model, layer, "toy_active_fraction", "fraction") for layer in range(3)]
    part = json.loads(_part(run, model).read_text())
    fs = load_features(run / "cache" / part["key"]["features"])
    assert fs.hidden.shape[0] == 3 and fs.encoder["name"] == "toy-projection"
    test = np.asarray(fs.splits)[fs.utt_index] == "test"
    want = (np.asarray(fs.hidden[:, test], np.float32) > 0).mean(axis=(1, 2))
    np.testing.assert_allclose([r["value"] for r in recs], want, rtol=1e-9)
    assert len(set(want)) == 3 and all(r["ci"][0] <= r["value"] <= r["ci"][1] for r in recs)

    saved = _part(run, model).stat().st_mtime_ns
    assert cli.main(command) == 0 and _part(run, model).stat().st_mtime_ns == saved
    assert part["key"]["settings"] == {"seed": 0, "spectral.num_bootstrap": 50}
    changed = load_config(str(config), ["spectral.num_bootstrap=60"], arg="smoke")
    key = pipeline.part_key("toy_active_fraction", changed, part["key"]["features"], None)
    assert key["settings"]["spectral.num_bootstrap"] == 60 and key != part["key"]


def test_unknown_model_type_and_the_help_name_the_registered_plugins(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not_registered"}))
    with pytest.raises(ValueError, match="'not_registered' is not supported") as err:
        encoders.load_encoder(tmp_path)
    assert all(t in str(err.value) for t in ("toy_projection", "whisper", "hubert"))
    with pytest.raises(ValueError, match="model_types already registered by another family: {'toy_projection': 'toy'}"):
        encoders.register_family(encoders.Family("toy2", model_types=("toy_projection",),
                                                 load=toy_plugins.load_toy))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    assert "toy_active_fraction" in buf.getvalue() and "toy_projection" in buf.getvalue()
