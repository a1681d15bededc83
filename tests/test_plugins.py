"""Plug-ins by name: an SSL objective registered from a file outside the package (tests/
toy_plugins.py) trains through ``speechmi pretrain --smoke`` with its Table 1 row, no package file
touched; an unregistered name is refused naming the registered ones."""

import json

import numpy as np

from speechmi_jax import cli
from speechmi_jax.ssl import table1

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
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["step"] == 4 and np.isfinite(recs[-1]["dev_loss"])
    cfg = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert cfg["causal"] is True  # the row says causal: the backbone follows it
    capsys.readouterr()
    path.write_text(CONFIG.replace('"toy_next_frame"', '"not_registered"'))
    assert cli.main(["pretrain", str(path), "--smoke", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "'not_registered'" in err and "toy_next_frame" in err and "apc" in err
