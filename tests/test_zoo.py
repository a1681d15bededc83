"""The model zoo: every shipped name loads and is listed; each model's final weights reproduce the
dev metric recorded in its card; checkpoints along training are different models; the recipe
(``experiments/train_zoo.sh`` + ``speechmi_jax.zoo.ship``) trains, exports every checkpoint and
ships a loadable model with a card whose metric the shipped weights reproduce."""

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

import speechmi_jax as smi
from speechmi_jax import cli, zoo
from speechmi_jax.zoo import metric
from xla_env import child_env  # tests/xla_env.py

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"apc", "hubert"}  # Table 1's two families on one backbone


def _close(got: dict, want: dict, tol: dict):
    for k, v in want.items():
        assert abs(got[k] - v) <= tol["abs"] + tol["rel"] * abs(v), (k, got[k], v)


def test_zoo_ships_enough_models_and_checkpoints():
    names = zoo.names()
    assert {zoo.card(n)["objective"] for n in names} >= FAMILIES and len(names) >= 2
    total = 0
    for n in names:
        card, steps = zoo.card(n), zoo.steps(n)
        # step 0 (the initialisation, the random-init control) and the final step at least
        assert steps[0] == 0 and len(steps) >= 2 and steps == card["checkpoints"] and steps[-1] == card["steps"]
        total += sum(p.stat().st_size for p in (zoo.ZOO_DIR / n).rglob("*.safetensors"))
        for key in ("bound_bits", "h_target_bits", "loss"):
            assert np.isfinite(card["final_dev"][key])
        assert card["data"]["content_hash"] and card["wall_time_s"] > 0 and card["parameters"] > 0
        assert (zoo.ZOO_DIR / n / "card.md").read_text().startswith(f"# {n}")
        assert (ROOT / card["recipe"]).is_file()  # every shipped model is a recipe file
    assert total <= 40e6, total  # the package's budget for all shipped weights


def test_available_encoders_and_cli_list_every_builtin_and_zoo_name():
    names = smi.available_encoders()
    assert {"logmel", "mfcc", "whisper-tiny.en", "random:hubert-base"} <= set(names)
    for n in zoo.names():
        assert n in names and all(f"{n}@step{s}" in names for s in zoo.steps(n))
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli.main(["encoders"]) == 0
    assert [line.split()[0] for line in buf.getvalue().splitlines()] == names


def test_every_zoo_name_loads_and_checkpoints_differ():
    wav = np.asarray(np.random.default_rng(0).normal(0, 0.1, (1, 8000)), np.float32)
    for n in zoo.names():
        cfg = json.loads((zoo.resolve(n) / "config.json").read_text())
        first = None
        for s in zoo.steps(n):
            enc = smi.load_encoder(f"{n}@step{s}")
            assert enc.hidden_size == cfg["hidden_size"]
            if s in (zoo.steps(n)[0], zoo.steps(n)[-1]):
                h = np.asarray(enc(wav, [8000]).hidden_states)
                assert h.shape[0] == enc.num_layers + 1 and np.isfinite(h).all()
                if first is None:
                    first = h
                else:  # training moved the weights between the first and the last checkpoint
                    assert np.abs(h[-1] - first[-1]).max() > 1e-2
        final = smi.load_encoder(n)
        assert final.num_layers == enc.num_layers and zoo.resolve(n) == zoo.resolve(f"{n}@step{s}")
        # Checkpoints of one architecture share one forward function, hence its executables.
        assert final.apply_fn is enc.apply_fn and final.masked_apply_fn is enc.masked_apply_fn
    with pytest.raises(ValueError, match=r"unknown checkpoint 'step1'.*@step<N>"):
        smi.load_encoder(f"{zoo.names()[0]}@step1")
    with pytest.raises(ValueError, match="random:<arch>"):  # '@' after random: stays a seed
        smi.load_encoder("random:nonexistent@1")


@pytest.mark.parametrize("name", zoo.names())
def test_shipped_model_reproduces_its_recorded_dev_metric(name):
    card = zoo.card(name)
    got = metric.recompute_dev_metric(name)
    _close(got, card["dev_slice_metric"], card["tolerance"])
    if card["objective"] == "apc":  # the check can fail: zeroing the head changes the loss
        params, aux, centroids = metric.load_objective(zoo.ZOO_DIR / name, metric.backbone_key(card))
        params["head"]["kernel"] = params["head"]["kernel"] * 0
        bad = metric.evaluate(metric.config_for_slice(card), params, aux, centroids, card["dev_slice"])
        assert abs(bad["loss"] - got["loss"]) > 10 * card["tolerance"]["abs"]


def test_a_population_members_card_reads_its_own_settings():
    """A card of member 1 of a population run (e.g. ``population.shift=[3,4]``) recomputes its
    metric with member 1's shift, and a card written before a config key existed reads that
    key's default. Catches: every member's metric taken with member 0's settings, old cards
    failing on keys added since."""
    card = json.loads(json.dumps(zoo.card("melapc-4x256")))
    card["config"]["population"].pop("past_weight", None)  # a card that predates the key
    card["config"]["model"].pop("past_frames", None)
    card["config"]["model"].pop("dropout", None)
    card["config"]["population"].update(shift=[3, 4], seed=[0])
    card["member"] = 1
    config = metric.config_for_slice(card)
    assert list(config.population.shift) == [4] and list(config.population.seed) == [0]
    assert list(config.population.past_weight) == [0.0] and config.model.past_frames == 0
    assert config.model.dropout == 0.0


def test_recipe_trains_exports_checkpoints_and_ships(tmp_path):
    bundled = ROOT / "speechmi_jax" / "data" / "bundled"
    env = child_env(PRETRAIN_DIR=str(bundled), RUNS=str(tmp_path / "runs"), SMOKE="1",
                    PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))  # its `python`
    done = subprocess.run(["bash", "experiments/train_zoo.sh", "melapc_3x128"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "melapc-3x128"  # a population of two seeds
    for m in ("member-0", "member-1"):
        assert sorted(p.name for p in (run / m / "models").iterdir()) == ["step2", "step4"]
        assert (run / m / "tb").is_dir()  # the curves as TensorBoard event files
    # The bundled corpus stands in for the pretraining set: give it the set's metadata files.
    fake = tmp_path / "set"
    fake.mkdir()
    (fake / "HASH").write_text("0" * 64 + "\n")
    (fake / "metadata.json").write_text(json.dumps(
        {"build_command": "bundled", "total_duration_s": 3600.0, "num_utterances": 1}))
    from speechmi_jax.zoo import ship

    card = ship.ship_one("melapc_3x128", run, fake, tmp_path / "zoo", member=1)
    assert card["checkpoints"] == [0, 2, 4] and card["final_dev"]["loss"] > 0 and card["seed"] == 1
    out = tmp_path / "zoo" / "melapc-3x128"
    _close(metric.recompute(out, card), card["dev_slice_metric"], card["tolerance"])
    enc = smi.load_encoder(out / "step2")
    assert enc.num_layers == 3 and enc.hidden_size == 128 and enc.frame_rate == 50.0


def test_zoo_path_folders_come_first_and_add_models(tmp_path, monkeypatch):
    """``SPEECHMI_ZOO_PATH`` (the selection zoo's cache): a shipped name found there resolves
    there, with the checkpoints the package leaves out; a name only there joins the list. Breaks
    if the package's folder is searched first or the extra folders are ignored."""
    shipped = zoo.names()[0]
    extra = tmp_path / "zoo"
    for name in (shipped, "extra-model"):
        for step in (0, 7):
            (extra / name / f"step{step}").mkdir(parents=True)
            for f in ("config.json", "model.safetensors"):
                (extra / name / f"step{step}" / f).write_bytes((zoo.ZOO_DIR / shipped / "step0" / f).read_bytes())
        (extra / name / "card.json").write_text(json.dumps(dict(zoo.card(shipped), name=name)))
    monkeypatch.setenv(zoo.PATH_ENV, str(extra))
    assert zoo.steps(shipped) == [0, 7] and zoo.resolve(f"{shipped}@step7") == extra / shipped / "step7"
    assert "extra-model" in zoo.names() and shipped in zoo.names()
    assert zoo.card("extra-model")["name"] == "extra-model"
    monkeypatch.delenv(zoo.PATH_ENV)
    assert "extra-model" not in zoo.names() and 7 not in zoo.steps(shipped)
