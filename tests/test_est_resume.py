"""Checkpointed sweeps: SIGKILL mid-run then rerun == uninterrupted run (bitwise, same mesh);
a corrupt latest checkpoint falls back to the previous one with a warning."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from speechmi_jax.estimators import api
from resume_testing import checkpoint_steps, kill_after_first_checkpoint
from xla_env import child_env  # tests/xla_env.py

SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jax
    from speechmi_jax.estimators import api
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 10000)
    z = (rng.normal(size=(2, 10000, 64)) + 0.3 * np.eye(64)[y][None] * np.arange(1, 3)[:, None, None])
    z = z.astype(np.float32)
    groups = np.arange(10000) // 25
    split = np.where(groups < 300, "train", np.where(groups < 350, "dev", "test"))
    opts = dict(optimizer="adam", learning_rates=(1e-3, 1e-2), steps=600, eval_every=10,
                batch_size=1024, devices=jax.devices()[:1], checkpoint_every=100)
    ckpt = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "-" else None
    est = api.probe_bank(z, y, groups, split, checkpoint_dir=ckpt, **opts)
    print(repr([(e.bits, e.ci, e.lr, e.step) for e in est]))
""")


# The scripts import this checkout's package, not whichever one is installed.
ENV = child_env(PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                         os.environ.get("PYTHONPATH")])))


def _run(tmp_path, ckpt):
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), ckpt], capture_output=True, text=True, check=True,
                         env=ENV)
    return out.stdout.strip().splitlines()[-1], out.stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("ref"), "-")[0]


def test_sigkill_resume_then_corrupt_fallback(tmp_path, reference):
    # 1. Kill -9 the sweep as soon as its first checkpoint is committed, rerun: same estimates.
    ckpt = tmp_path / "ckpt"
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT)
    saved = kill_after_first_checkpoint([sys.executable, str(script), str(ckpt)], ckpt, env=ENV)
    assert saved and max(saved) < 600, f"expected a mid-run checkpoint, found steps {saved}"
    resumed, _ = _run(tmp_path, str(ckpt))
    assert resumed == reference

    # 2. Overwrite every array file of the newest checkpoint with garbage of the same size: the
    # rerun warns, restores the previous checkpoint, replays the rest and ends the same.
    steps = checkpoint_steps(ckpt)
    assert len(steps) == 3 and steps[-1] == 600  # max_to_keep = 3
    for f in (ckpt / str(steps[-1]) / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "metadata" not in f.name:
            f.write_bytes(np.random.default_rng(0).bytes(f.stat().st_size))
    rerun, stderr = _run(tmp_path, str(ckpt))
    assert f"checkpoint {ckpt.absolute() / str(steps[-1])}" in stderr
    assert "falling back to the previous checkpoint" in stderr
    assert rerun == reference
    # The bad step was set aside (not deleted) and saved afresh by the replay: a third run
    # restores it without a warning.
    assert (ckpt / f"corrupt-{steps[-1]}" / "state").is_dir()
    assert checkpoint_steps(ckpt)[-1] == steps[-1]
    third, stderr = _run(tmp_path, str(ckpt))
    assert "falling back" not in stderr and third == reference


def test_checkpoint_of_another_run_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(1, 600, 4)).astype(np.float32), rng.integers(0, 2, 600)
    split = np.repeat(["train", "dev", "test"], 200)
    opts = dict(optimizer="adam", learning_rates=(0.1,), steps=20, eval_every=10, checkpoint_every=10,
                devices=jax.devices()[:1], checkpoint_dir=tmp_path)
    api.probe_bank(z, y, None, split, **opts)
    with pytest.raises(ValueError, match="belongs to a different run"):
        api.probe_bank(z + 1, y, None, split, **opts)


TRUNCATE = textwrap.dedent("""
    import sys, numpy as np, jax
    from speechmi_jax.estimators import api
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 3000)
    z = (rng.normal(size=(2, 3000, 32)) + 0.5 * np.eye(32)[y][None]).astype(np.float32)
    split = np.repeat(["train", "dev", "test"], 1000)
    est = api.probe_bank(z, y, np.arange(3000) // 20, split, optimizer="adam", learning_rates=(1e-2,),
                         steps=60, eval_every=10, batch_size=256, devices=jax.devices()[:1],
                         checkpoint_every=20, checkpoint_dir=sys.argv[1])
    print(repr([(e.bits, e.step) for e in est]))
""")


def test_truncated_checkpoint_falls_back_quietly(tmp_path):
    # Halving the newest step's data files: the file list written after the save catches it
    # before Orbax reads a byte. (Without it, Orbax's restore failed part-way and every read
    # still in flight printed an "Event loop is closed" traceback, ~20 of them.)
    script, ckpt = tmp_path / "run.py", tmp_path / "ckpt"
    script.write_text(TRUNCATE)
    run = lambda: subprocess.run([sys.executable, str(script), str(ckpt)], capture_output=True, text=True,
                                 check=True, env=ENV)
    first = run()
    newest = checkpoint_steps(ckpt)[-1]
    data = [f for f in (ckpt / str(newest) / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
    assert newest == 60 and data
    for f in data:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    again = run()
    assert again.stdout == first.stdout
    assert f"checkpoint {ckpt.absolute() / '60'}: file state/d/" in again.stderr
    assert "falling back to the previous checkpoint" in again.stderr
    assert "Traceback" not in again.stderr and "Event loop is closed" not in again.stderr, again.stderr


def test_default_cadence_saves_at_most_once_a_minute(tmp_path, monkeypatch):
    # Without an explicit checkpoint_every a bank saves at most ten times a run and at most once
    # per DEFAULT_CHECKPOINT_MIN_SECONDS, always at its last step: a bank of a few seconds (the
    # demo's) saves once. Fails if the throttle goes (four saves), or if it also drops the last
    # step, or if an explicit checkpoint_every is throttled too.
    from speechmi_jax import training
    from speechmi_jax.estimators import train as train_lib
    saved = []
    save = training.CheckpointStore.save
    monkeypatch.setattr(training.CheckpointStore, "save",
                        lambda self, step, state: (saved.append(step), save(self, step, state)))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    z = (rng.normal(size=(1, 300, 4)) + np.eye(4)[y][None]).astype(np.float32)
    split = np.repeat(["train", "dev", "test"], 100)
    opts = dict(steps=20, eval_every=5, devices=jax.devices()[:1], num_bootstrap=10)

    def run(name, **kw):
        saved.clear()
        api.probe_bank(z, y, np.arange(300) // 10, split, checkpoint_dir=tmp_path / name,
                       **opts, **kw)
        return list(saved)

    assert run("default") == [20]
    assert run("explicit", checkpoint_every=5) == [5, 10, 15, 20]
    monkeypatch.setattr(train_lib, "DEFAULT_CHECKPOINT_MIN_SECONDS", 0.0)
    assert run("unthrottled") == [5, 10, 15, 20]
