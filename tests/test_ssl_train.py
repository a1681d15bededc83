"""The pretraining loop on the bundled corpus (8 simulated devices): a short APC population run
lowers the dev loss; a population of 2 equals 2 separate runs; SIGTERM (which checkpoints the
step it stops at), then SIGKILL mid-run, then a rerun gives identical metrics and model, and so
does a rerun over a damaged checkpoint. Every other objective: test_ssl_smoke.py."""

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import speechmi_jax as smi
from speechmi_jax.ssl import trainer
from resume_testing import checkpoint_steps

# The reference runs are subprocesses on 8 devices, and in-process reruns must match them.
pytestmark = pytest.mark.all_devices
ROOT = Path(__file__).resolve().parents[1]
STEPS = 40
RUN = ["--smoke", "--set", f"steps={STEPS}", "--set", "eval_every=10", "--set", "checkpoint_every=10",
       "--set", "optim.warmup_steps=5"]
POP = ["--set", "population.seed=[0,1]", "--set", "population.lr=[0.003,0.001]"]


def _cmd(out, extra=()):
    return [sys.executable, "-m", "speechmi_jax.cli", "pretrain", "apc", "--out", str(out), *RUN, *POP, *extra]



@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-member APC population run (a subprocess, like the killed one)."""
    root = tmp_path_factory.mktemp("ssl")
    out = root / "ref"
    subprocess.run(_cmd(out), check=True, cwd=ROOT, capture_output=True)
    return root, out


def test_short_run_lowers_dev_loss(reference):
    _, out = reference
    for i in range(2):
        recs = trainer.read_metrics(out / f"member-{i}" / "metrics.jsonl")
        assert [r["step"] for r in recs] == [0, 10, 20, 30, 40]
        assert recs[-1]["dev_loss"] < 0.9 * recs[0]["dev_loss"], (recs[0]["dev_loss"], recs[-1]["dev_loss"])
        for r in recs:  # every record carries the objective's bound and H(Z_target)
            assert np.isfinite([r["dev_bound_bits"], r["dev_h_target_bits"], r["dev_nll_bits"]]).all()
        enc = smi.load_encoder(out / f"member-{i}" / "model")
        hidden = enc(np.zeros((1, 16000), np.float32), [16000]).hidden_states
        assert hidden.shape[0] == enc.num_layers + 1 and np.isfinite(np.asarray(hidden)).all()


def test_population_equals_separate_runs(reference, tmp_path):
    _, out = reference
    for i, (seed, lr) in enumerate([(0, 0.003), (1, 0.001)]):
        _, config = trainer.load_pretrain_config(
            "apc", [a for a in RUN if a != "--set" and a != "--smoke"]
            + [f"population.seed=[{seed}]", f"population.lr=[{lr}]"], smoke=True)
        single = tmp_path / f"single-{i}"
        trainer.pretrain(config, single, progress=False)
        pop, sep = trainer.read_metrics(out / f"member-{i}" / "metrics.jsonl"), trainer.read_metrics(single / "metrics.jsonl")
        assert len(pop) == len(sep)
        for a, b in zip(pop, sep):
            for k, v in a.items():
                if isinstance(v, float):
                    # A bound is the difference of two Gaussian entropies (APC's on 160-d stacked
                    # log-mel: ~-280 bits each): its float error scales with theirs, not with it.
                    split = k.partition("_")[0]
                    scale = max(1.0, abs(v), abs(a.get(f"{split}_h_target_bits", 0.0)))
                    assert abs(v - b[k]) <= 1e-5 * scale, (k, a["step"], v, b[k])
        pa, pb = load_file(out / f"member-{i}" / "model" / "model.safetensors"), load_file(single / "model" / "model.safetensors")
        assert pa.keys() == pb.keys()
        for k in pa:
            np.testing.assert_allclose(pa[k], pb[k], atol=1e-5, err_msg=k)


def _same_as_reference(out, ref):
    for i in range(2):
        m = f"member-{i}"
        assert (out / m / "metrics.jsonl").read_text() == (ref / m / "metrics.jsonl").read_text()
        assert (out / m / "model" / "model.safetensors").read_bytes() == \
            (ref / m / "model" / "model.safetensors").read_bytes()


def test_sigterm_then_sigkill_mid_run_then_rerun_is_identical(reference):
    """SIGTERM (a scheduler's pre-emption) once the first checkpoint exists: the run stops at
    the next step boundary, checkpoints that step (with the train metrics since the last
    record), prints one line with the command that resumes it and exits 143 (128 + SIGTERM).
    The same command, SIGKILLed as soon as it has saved a later step, leaves that step; run once
    more it ends with the uninterrupted run's metrics and model, bit for bit. Catches: SIGTERM
    killing the run where it stood (exit -15, no checkpoint of that step, no word on resuming);
    a resume that replays other batches or loses the pending metrics (the files differ); a
    kill that did not land mid-run (the asserted steps)."""
    root, ref = reference
    out = root / "interrupted"
    ckpt = out / "member-1" / "checkpoints"
    child = subprocess.Popen(_cmd(out), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not checkpoint_steps(ckpt) and child.poll() is None:
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate()
    assert child.returncode == 143, err
    last = err.strip().splitlines()[-1]
    stopped = int(re.search(r"speechmi: stopped by SIGTERM at step (\d+) of 40", last).group(1))
    assert "to resume, run the same command again: speechmi pretrain apc --out" in last, last
    assert 10 <= stopped < STEPS and checkpoint_steps(ckpt)[-1] == stopped
    assert not (out / "member-1" / "model").exists()
    first = stopped
    deadline = time.monotonic() + 600
    child = subprocess.Popen(_cmd(out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while checkpoint_steps(ckpt)[-1] == first and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.kill()
    child.wait()
    saved = checkpoint_steps(ckpt)
    assert first < saved[-1] < STEPS, f"expected a later mid-run checkpoint, found steps {saved}"
    assert not (out / "member-1" / "model").exists()
    subprocess.run(_cmd(out), check=True, cwd=ROOT, capture_output=True)
    _same_as_reference(out, ref)


def test_corrupt_member_checkpoint_is_set_aside_and_the_older_step_is_used(reference):
    """The uninterrupted run's folder, member 1's newest checkpoint overwritten with garbage of
    the same size: the rerun warns naming it, moves it aside, resumes both members from the
    older step and ends with the uninterrupted run's metrics and models, bit for bit. Catches: a
    trainer that restores a checkpoint unverified (it exports the damaged state, or fails
    reading it)."""
    root, ref = reference
    out = root / "corrupt"
    shutil.copytree(ref, out)
    ckpt = out / "member-1" / "checkpoints"
    assert checkpoint_steps(ckpt) == [30, 40]
    for f in (ckpt / "40" / "default").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "metadata" not in f.name.lower():
            f.write_bytes(np.random.default_rng(0).bytes(f.stat().st_size))
    _, config = trainer.load_pretrain_config(
        "apc", [a for a in RUN + POP if a not in ("--set", "--smoke")], smoke=True)
    with pytest.warns(UserWarning, match="falling back to the previous checkpoint") as caught:
        trainer.pretrain(config, out, progress=False)
    assert any(f"checkpoint {ckpt.absolute() / '40'}: " in str(w.message) for w in caught)
    assert (ckpt / "corrupt-40" / "default").is_dir() and checkpoint_steps(ckpt) == [30, 40]
    _same_as_reference(out, ref)
