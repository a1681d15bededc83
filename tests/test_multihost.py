"""Several processes, one run (``distributed.py``), tested as 2 processes x 2 CPU devices on
localhost against 1 process x 4 devices: ``speechmi run --smoke`` (a probe and an InfoNCE bank)
and ``speechmi pretrain --smoke`` give the same records and the same model; a process killed
mid-run ends the other with an error naming it, and rerunning both resumes to the records of
the one-process run (the two-process run is that killed and resumed one);
TFDS LibriSpeech is copied by process, in contiguous parts.

Not bit-identical across the two layouts: the bank's full-batch sums are all-reduced across
processes (gloo) instead of inside one, in another order (measured: the run's records differ
by up to 3e-6 bits, APC's metrics by up to 6e-6 relative, its weights by up to 6e-8); the
features themselves are bit-identical.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from speechmi_jax import distributed
from speechmi_jax.analysis.results import first_difference
from speechmi_jax.configs import demo
from speechmi_jax.ssl import trainer
from resume_testing import checkpoint_steps
from xla_env import xla_flags  # tests/xla_env.py

HEARTBEAT_S = 10
RUN = [demo.__file__, "--smoke", "--set", "encoders=['logmel']",
       "--set", "measures=['phone','infonce_next_k']", "--set", "infonce.eval_every=10",
       # an explicit cadence: the default one saves a bank this short only at its last step
       "--set", "infonce.checkpoint_every=10", "--set", "progress=False"]
PRETRAIN = ["apc", "--smoke"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, cache: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in distributed.ENV.values()}
    return {**env, "XLA_FLAGS": xla_flags(devices),
            "JAX_COMPILATION_CACHE_DIR": str(cache), **extra}


def _start(args, processes: int, cache: Path, log: Path) -> list[subprocess.Popen]:
    """``speechmi ARGS`` as ``processes`` processes of 4 // processes CPU devices each."""
    port, out = _free_port(), []
    for i in range(processes):
        extra = {} if processes == 1 else {
            "SPEECHMI_COORDINATOR": f"127.0.0.1:{port}", "SPEECHMI_NUM_PROCESSES": str(processes),
            "SPEECHMI_PROCESS_ID": str(i), "SPEECHMI_HEARTBEAT_S": str(HEARTBEAT_S),
            "SPEECHMI_INIT_TIMEOUT_S": "60"}
        with open(log.with_suffix(f".p{i}.log"), "w") as f:
            out.append(subprocess.Popen([sys.executable, "-m", "speechmi_jax.cli", *args],
                                        stdout=f, stderr=subprocess.STDOUT,
                                        env=_env(4 // processes, cache, **extra)))
    return out


def _finish(procs, log: Path, timeout: float = 600) -> None:
    for i, p in enumerate(procs):
        rc = p.wait(timeout=timeout)
        assert rc == 0, f"process {i}: exit {rc}\n" + log.with_suffix(f".p{i}.log").read_text()[-3000:]


def _speechmi(args, processes: int, cache: Path, log: Path) -> None:
    _finish(_start(args, processes, cache, log), log)


def _records(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["records"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The run config on 1 process x 4 devices, then on 2 processes x 2 devices with one of them
    killed mid-run (after the phone probe finished and the InfoNCE bank checkpointed) and both
    rerun: the folder, and what happened at the kill."""
    root = tmp_path_factory.mktemp("multihost")
    _speechmi(["run", *RUN, "--out", str(root / "run1")], 1, root / "xla", root / "run1")
    out = root / "run2"
    args = ["run", *RUN, "--out", str(out)]
    procs = _start(args, 2, root / "xla", root / "killed")
    ckpt = lambda: [s for d in out.glob("checkpoints/logmel/infonce_next_k-*") for s in
                    checkpoint_steps(d)]
    deadline = time.monotonic() + 600
    while not ckpt() and procs[0].poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ckpt() and procs[0].poll() is None, "the InfoNCE bank never checkpointed"
    phone_part = out / "parts" / "logmel__phone.json"
    finished = phone_part.stat().st_mtime_ns
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    rc = procs[0].wait(timeout=HEARTBEAT_S + 60)
    kill = {"rc": rc, "waited": time.monotonic() - t0, "log": (root / "killed.p0.log").read_text(),
            "results_after_kill": (out / "results.json").exists()}
    procs[1].wait()
    _speechmi(args, 2, root / "xla", root / "rerun")
    kill["phone_part_reused"] = phone_part.stat().st_mtime_ns == finished
    return root, kill


def test_launch_reads_flags_then_environment():
    class Args:
        coordinator, num_processes, process_id, distributed, heartbeat_s = None, None, None, None, None
    assert distributed.launch_from(Args(), {}) is None
    env = {"SPEECHMI_COORDINATOR": "h:1", "SPEECHMI_NUM_PROCESSES": "2", "SPEECHMI_PROCESS_ID": "1"}
    assert distributed.launch_from(Args(), env) == distributed.Launch("h:1", 2, 1)
    flags = Args()
    flags.process_id, flags.heartbeat_s = 0, 7
    assert distributed.launch_from(flags, env) == distributed.Launch("h:1", 2, 0, heartbeat_s=7)
    assert distributed.launch_from(Args(), {"SPEECHMI_DISTRIBUTED": "auto"}).auto
    assert distributed.launch_from(Args(), {"SPEECHMI_NUM_PROCESSES": "1"}) is None
    with pytest.raises(ValueError, match="missing --process-id"):
        distributed.launch_from(Args(), {**env, "SPEECHMI_PROCESS_ID": ""})
    with pytest.raises(ValueError, match="expected 0 <= id < --num-processes 2"):
        distributed.launch_from(Args(), {**env, "SPEECHMI_PROCESS_ID": "2"})
    assert distributed.share(7, 1, 3).tolist() == [1, 4]


def test_run_on_two_processes_matches_one(runs):
    """The two-process run (killed once and rerun) against the one-process run."""
    root, _ = runs
    one, two = root / "run1", root / "run2"
    assert first_difference(_records(one), _records(two), "records", 1e-5, relative=True) is None
    # Each process encoded its share into a shard; process 0 merged them: the same entry.
    (entry,) = [p for p in (two / "cache").iterdir() if p.is_dir() and p.name != "xla"]
    assert not list((two / "cache").glob("*.shard-*-of-2")), "shards are deleted once merged"
    np.testing.assert_array_equal(np.load(entry / "hidden.npy"),
                                  np.load(one / "cache" / entry.name / "hidden.npy"))
    assert sorted(p.name for p in (two / "parts").iterdir()) == sorted(
        p.name for p in (one / "parts").iterdir())


def test_lost_process_stops_the_other_and_rerun_resumes(runs):
    _, kill = runs
    assert kill["rc"] != 0 and "unhealthy" in kill["log"], kill["log"][-2000:]
    assert "stopped sending heartbeats" in kill["log"], kill["log"][-2000:]
    assert not kill["results_after_kill"]
    assert kill["phone_part_reused"], "the finished measure is reused"
    print(f"the survivor stopped {kill['waited']:.1f} s after the kill (heartbeat {HEARTBEAT_S} s)")


def test_pretrain_on_two_processes_matches_one(tmp_path):
    from safetensors.numpy import load_file
    for n in (1, 2):
        _speechmi(["pretrain", *PRETRAIN, "--out", str(tmp_path / f"p{n}")], n,
                  tmp_path / "xla", tmp_path / f"pretrain{n}")
    metrics = [trainer.read_metrics(tmp_path / f"p{n}" / "metrics.jsonl") for n in (1, 2)]
    assert first_difference(*metrics, "metrics", 1e-5, relative=True) is None  # APC: ~100s of bits
    one, two = (load_file(tmp_path / f"p{n}" / "model" / "model.safetensors") for n in (1, 2))
    assert one.keys() == two.keys()
    for k in one:
        np.testing.assert_allclose(two[k], one[k], atol=1e-5, rtol=0, err_msg=k)


TFDS_SCRIPT = """
import json, sys
from pathlib import Path
import soundfile as sf
from speechmi_jax import distributed
distributed.start(distributed.launch_from(None))
import tensorflow_datasets as tfds
from speechmi_jax.data.corpus import load_corpus
written, write = [], sf.write
sf.write = lambda path, *a, **k: (written.append(Path(path).name.split(".")[0]), write(path, *a, **k))
data_dir, grids, cache = sys.argv[1:]
corpus = load_corpus("librispeech", builder=tfds.builder_from_directory(data_dir),
                     split="dev_clean", textgrid_dir=grids, cache_dir=cache)
print("RESULT", json.dumps({"written": written, "ids": [u.id for u in corpus]}))
"""


def test_tfds_librispeech_is_copied_by_process(tmp_path):
    """Each process copies its contiguous part of the split (``tfds.split_for_jax_process``);
    both read the corpus one process would (the same utterances, in TFDS order)."""
    tfds_testing = pytest.importorskip("test_data_tfds")  # skipped without tensorflow
    from speechmi_jax.data.corpus import load_corpus
    builder, by_id = tfds_testing.prepared_librispeech(tmp_path, 5, textgrids=tmp_path / "mfa")
    alone = load_corpus("librispeech", builder=builder, split="dev_clean",
                        textgrid_dir=tmp_path / "mfa", cache_dir=tmp_path / "alone")
    order = [u.id for u in alone]
    assert sorted(order) == sorted(by_id)
    port, procs = _free_port(), []
    for i in range(2):
        env = _env(1, tmp_path / "xla", SPEECHMI_COORDINATOR=f"127.0.0.1:{port}",
                   SPEECHMI_NUM_PROCESSES="2", SPEECHMI_PROCESS_ID=str(i),
                   SPEECHMI_HEARTBEAT_S=str(HEARTBEAT_S), SPEECHMI_INIT_TIMEOUT_S="60")
        procs.append(subprocess.Popen(
            [sys.executable, "-c", TFDS_SCRIPT, builder.data_dir, str(tmp_path / "mfa"),
             str(tmp_path / "shared")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env))
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.split("RESULT ", 1)[1]))
    assert [r["ids"] for r in results] == [order, order]
    assert results[0]["written"] == order[:3] and results[1]["written"] == order[3:]
