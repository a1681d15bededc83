"""Hostile input at the Python API: encoder calls, encoder names and estimator inputs are
refused with a message naming the argument and what was expected, or handled exactly
(features at extreme scales). Data-file faults are in test_data_readers.py, checkpoint-file
faults in test_checkpoints.py.

Round 2: every run and pretraining setting range-checked before anything is written; one
writer per run folder and per feature-cache entry (two processes at once); a dev split smaller
than a batch; a split a filter emptied; a run folder given as an encoder; a misnamed manifest
column. SIGTERM mid-run is in test_ssl_train.py and test_pipeline.py."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import speechmi_jax as smi
from xla_env import child_env  # tests/xla_env.py


@pytest.fixture(scope="module")
def logmel():
    return smi.load_encoder("logmel")


WAV = (0.1 * np.random.default_rng(0).standard_normal((2, 16000))).astype(np.float32)


def test_encoder_refuses_integer_waveforms(logmel):
    with pytest.raises(TypeError, match=r"waveforms has dtype int16: expected float samples in "
                                        r"\[-1, 1\] \(int16 PCM: divide by 32768 first\)"):
        logmel((WAV * 32768).astype(np.int16), [16000, 8000])


@pytest.mark.parametrize("lengths, pattern", [
    ([16000, 20000], r"lengths\[1\] = 20000: expected 0 <= length <= 16000"),
    ([-5, 100], r"lengths\[0\] = -5: expected 0 <= length <= 16000"),
    ([1.5, 100], r"lengths .* holds 1.5: expected whole numbers of samples"),
    (["16000", "100"], r"lengths .* holds '16000': expected whole numbers of samples"),
])
def test_encoder_refuses_bad_lengths(logmel, lengths, pattern):
    with pytest.raises(ValueError, match=pattern):
        logmel(WAV, lengths)


def test_encoder_checks_keep_valid_calls_and_jit(logmel):
    """Whole-number float lengths are accepted; under jit the lengths are tracers and only the
    dtype checks run, so the traced call gives the same mask as the eager one."""
    lengths = np.array([16000, 8000])
    mask = np.asarray(logmel(WAV, lengths).mask)
    np.testing.assert_array_equal(mask.sum(1), logmel.num_frames(lengths))
    np.testing.assert_array_equal(np.asarray(logmel(WAV, lengths.astype(np.float64)).mask), mask)
    traced = jax.jit(lambda w, n: logmel(w, n).mask)(jnp.asarray(WAV), jnp.asarray(lengths))
    np.testing.assert_array_equal(np.asarray(traced), mask)
    with pytest.raises(TypeError, match="lengths has dtype float32: expected integer"):
        jax.jit(lambda w, n: logmel(w, n).mask)(WAV, lengths.astype(np.float32))


def test_unknown_encoder_name_lists_the_builtins(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as err:
        smi.load_encoder("hubert")
    text = str(err.value)
    assert "not in the Hugging Face cache" in text
    for name in ("logmel", "mfcc", "whisper-tiny.en", "random:<arch>", "hubert-base"):
        assert name in text


@pytest.mark.parametrize("name, pattern", [
    ("random:hubert-base@x", r"'random:hubert-base@x': seed 'x' is not an integer; expected "
                             r"random:hubert-base@<int seed>"),
    ("random:hubret-base", r"unknown architecture 'hubret-base'; expected .*'hubert-base'"),
])
def test_bad_random_encoder_names(name, pattern):
    with pytest.raises(ValueError, match=pattern):
        smi.load_encoder(name)


def _classes(rng, n, scale=1.0):
    """4 Gaussian classes in 4 dims, means 1.5 apart on the axes (about 1 bit of MI)."""
    y = rng.integers(0, 4, n)
    z = rng.normal(size=(n, 4)) + 1.5 * np.eye(4)[y]
    return (z * scale).astype(np.float32), y


def test_probe_is_exact_at_extreme_feature_scales():
    """Standardisation in float64: features scaled by 1e30 give the same bound as unscaled
    ones (float32 statistics overflowed to std = inf and gave ~0 bits). Tolerance 1e-3 bits."""
    rng = np.random.default_rng(0)
    (zt, yt), (ze, ye) = _classes(rng, 1500), _classes(rng, 600)
    plain = smi.probe_mi(zt, yt, ze, ye, num_bootstrap=100)
    huge = smi.probe_mi(zt * np.float32(1e30), yt, ze * np.float32(1e30), ye, num_bootstrap=100)
    assert 0.8 < plain.bits < plain.ceiling_bits
    assert abs(huge.bits - plain.bits) < 1e-3


def test_probe_refuses_one_class_test_set_and_string_labels():
    rng = np.random.default_rng(1)
    (zt, yt), (ze, ye) = _classes(rng, 200), _classes(rng, 100)
    with pytest.raises(ValueError, match=r"y_test\) holds 1 class \[2\] over 100 items: H\(Y\) = 0"):
        smi.probe_mi(zt, yt, ze, np.full_like(ye, 2))
    with pytest.raises(ValueError, match=r"y has dtype <U\d+: expected integer class ids"):
        smi.probe_mi(zt, yt.astype(str), ze, ye.astype(str))


def test_report_lists_skipped_utterances_with_their_reasons(tmp_path):
    from speechmi_jax.analysis import report, results
    recs = [{"encoder": "e", "layer": l, "measure": "phone_mi", "value": 0.5 * l,
             "ci": [0.5 * l - 0.1, 0.5 * l + 0.1]} for l in range(3)]
    skipped = [{"id": f"u{i}", "reason": f"u{i}.wav: audio holds NaN or infinite samples"}
               for i in range(25)]
    md = report.write_report(results.Results(recs, {"skipped": skipped}), tmp_path,
                             num_bootstrap=50, num_permutations=50).read_text()
    section = md.split("## Skipped utterances")[1].split("\n## ")[0]
    assert "25 utterance(s) were left out" in section
    assert "- `u0`: u0.wav: audio holds NaN or infinite samples" in section
    assert "- `u19`:" in section and "- `u20`:" not in section and "and 5 more" in section


# ------------------------------------------------------------------------------ round 2: settings

def _set(config, key: str, value):
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value


def _outside(rng, current):
    """An out-of-range value shaped like the setting (a list's first item out of range)."""
    bad = rng.outside()
    if isinstance(current, (list, tuple)):
        return type(current)([bad] * max(len(current), 1))
    return bad


_LIST_SETTINGS = ("learning_rates", "l2", "seeds", "mesh_shape", "layers")


def test_every_numeric_run_setting_has_a_range_and_is_refused_outside_it():
    """Walks every numeric key of the run schema (``base_config``, the estimator arguments and
    ``load_corpus`` options a config may set) with a value outside its range: each is a ConfigError naming the key. A
    key added without a range fails here. Catches: ranges checked for a few keys only (e.g.
    ``views.masked_fraction`` was, ``probe.l2`` items, ``infonce.k`` or ``ctc.batch_size`` were
    not)."""
    import inspect

    from speechmi_jax.configs import base, ranges
    from speechmi_jax.data.corpus import load_corpus
    from speechmi_jax.estimators import api, ctc, generic
    table = base.run_ranges()
    keys = {k for k, v in ranges.leaves(base.base_config()) if ranges.is_numeric(v)}
    fns = {"probe": api.probe_bank, "infonce": api.infonce_bank,
           "infonce_same": generic.infonce_same_utterance_bank, "ctc": ctc.ctc_per_bank}
    settable = {k for k, _ in ranges.leaves(base.base_config())}
    params = lambda fn: inspect.signature(fn).parameters
    sections = {s: (params(fn), base.estimator_settings(s)) for s, fn in fns.items()}
    sections["corpus_options"] = (params(load_corpus), [
        p.name for p in params(load_corpus).values() if p.kind == p.KEYWORD_ONLY])
    for section, (signature, names) in sections.items():
        for name in names:
            settable.add(f"{section}.{name}")
            if ranges.is_numeric(signature[name].default):
                keys.add(f"{section}.{name}")
    assert keys - set(table) == set(), "numeric settings without a range"
    assert set(table) - settable == set(), "ranges of keys the schema does not have"
    for key, rng in sorted(table.items()):
        c = base.base_config()
        section, _, name = key.partition(".")
        current = c[section].get(name) if name else c[key]
        if section == "corpus_options":
            c.corpus_options = {name: None}
        if current is None and name in _LIST_SETTINGS:
            current = [1]
        _set(c, key, _outside(rng, current))
        with pytest.raises(base.ConfigError, match=re.escape(f"'{key}") + r".* out of range; expected"):
            base.validate(c)


def _pretrain_configs():
    """Every bundled pretraining config (the model settings differ between objectives)."""
    from speechmi_jax.ssl import trainer
    folder = Path(trainer.__file__).parents[1] / "configs" / "pretrain"
    names = sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "common"))
    assert {"apc", "hubert", "data2vec", "wav2vec2", "vqapc"} <= set(names)
    return {n: (lambda n=n: trainer.load_pretrain_config(n)[1]) for n in names}


def test_every_numeric_pretraining_setting_has_a_range_and_is_refused_outside_it():
    """Walks every numeric key of every bundled pretraining config (optim.*, population lists,
    model.hf_config.*, targets.*, wav2vec2.* ...) with a value outside its range:
    ``validate_config`` refuses each naming the key. A key added without a range fails here.
    Catches: ``crop_seconds=0`` (passed validation, then died inside the front end), and every
    other setting but the five step counts going unchecked."""
    from speechmi_jax.configs import ranges
    from speechmi_jax.configs.base import ConfigError
    from speechmi_jax.configs.pretrain.common import RANGES
    from speechmi_jax.ssl import trainer
    seen = set()
    for name, make in _pretrain_configs().items():
        config = make()
        keys = {k for k, v in ranges.leaves(config) if ranges.is_numeric(v)}
        assert keys - set(RANGES) == set(), (name, "numeric settings without a range")
        seen |= {k for k, _ in ranges.leaves(config)}
        for key in sorted(keys):
            c = make()
            current = dict(ranges.leaves(c))[key]
            _set(c, key, _outside(RANGES[key], current))
            with pytest.raises(ConfigError, match=re.escape(f"'{key}") + r".* out of range"):
                trainer.validate_config(c)
    assert set(RANGES) - seen == set(), "ranges of keys no pretraining config has"


@pytest.mark.parametrize("override, pattern", [
    ("mask_span=20", r"'mask_span' and 'crop_seconds': a 0.2 s crop has 10 frames"),
    ("data2vec.top_k=3", r"'data2vec.top_k': 3 layers; .*expected top_k <= 2"),
    ("checkpoint_every=3", r"checkpoint_every=3 must be a multiple of eval_every=2"),
    ("population.past_weight=[1.0]", r"'population.past_weight' and 'model.past_frames': .*objective "
                                     r"'data2vec' is not APC"),
])
def test_pretraining_settings_that_depend_on_each_other(override, pattern):
    """Rules between keys are checked with the ranges. Catches: a mask span longer than the
    crop (no frame masked, a loss of 0), data2vec averaging more layers than the model has."""
    from speechmi_jax.configs.base import ConfigError
    from speechmi_jax.ssl import trainer
    with pytest.raises(ConfigError, match=pattern):
        trainer.load_pretrain_config("data2vec", ["crop_seconds=0.2", override], smoke=True)


def test_a_refused_setting_writes_nothing(tmp_path, capsys):
    """``speechmi pretrain apc --set crop_seconds=0`` and ``speechmi demo --set
    infonce.k=1`` are one config-error line each, exit 2, and no folder; ``pretrain()`` called
    directly checks too, before creating its folder. Catches: the settings passing,
    ``pretrain_config.json`` / ``config.json`` being written and the run dying later (in the
    front end: exit 1, and the folder then refused the corrected command)."""
    from speechmi_jax import cli
    from speechmi_jax.configs.base import ConfigError
    from speechmi_jax.ssl import trainer
    out = tmp_path / "run"
    assert cli.main(["pretrain", "apc", "--smoke", "--out", str(out), "--set", "crop_seconds=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'crop_seconds': 0.0 is out of range; expected >= 0.1" in err
    assert cli.main(["demo", "--smoke", "--out", str(out), "--set", "infonce.k=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'infonce.k': 1 is out of range; expected an integer >= 2" in err
    _, config = trainer.load_pretrain_config("apc", smoke=True)
    config.optim.warmup_steps = -1
    with pytest.raises(ConfigError, match="'optim.warmup_steps': -1 is out of range"):
        trainer.pretrain(config, out, progress=False)
    assert not out.exists()


# ------------------------------------------------------------------------------ round 2: one writer

_CLAIM = textwrap.dedent("""
    import sys, time
    from speechmi_jax import locks, rundir
    try:
        with rundir.claim(sys.argv[1]):
            print("held", flush=True)
            time.sleep(float(sys.argv[2]))
    except locks.FolderBusy as e:
        print("busy:", e, flush=True)
        sys.exit(1)
""")


def _python(script, *args, **kwargs):
    env = child_env()
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_two_processes_started_at_once_on_one_run_folder(tmp_path):
    """Two processes claim one run folder at the same moment: one holds it, the other is
    refused at once with a message naming the holder's pid and host. Catches: no lock at all
    (both wrote the folder; one died with FileNotFoundError on a file the other renamed)."""
    out = tmp_path / "run"
    procs = [_python(_CLAIM, out, 3) for _ in range(2)]
    outs = [p.communicate()[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    holder, refused = (procs[0], procs[1]) if procs[0].returncode == 0 else (procs[1], procs[0])
    text = outs[procs.index(refused)]
    assert f"run folder {out} is in use by pid {holder.pid} on host " in text, text
    assert "--wait" in text
    assert (out / "speechmi.lock").read_text() == ""  # released: emptied, not deleted


def test_stale_lock_is_taken_over_and_a_waiter_gets_the_folder(tmp_path, caplog):
    """A lock file left by a process that is gone (kill -9) is taken over with a warning naming
    the old holder; with ``wait=True`` a second process waits for a live holder instead of
    failing. Catches: no lock (or one that a dead holder blocks for ever)."""
    import logging

    from speechmi_jax import locks, rundir
    out = tmp_path / "run"
    out.mkdir()
    (out / "speechmi.lock").write_text(json.dumps({"pid": 2**22 + 17, "host": "gone-host"}))
    with caplog.at_level(logging.WARNING, logger="speechmi_jax.locks"):
        with rundir.claim(out):
            assert json.loads((out / "speechmi.lock").read_text())["pid"] == os.getpid()
    assert (f"run folder {out}: taking over the lock of pid {2**22 + 17} on host gone-host, "
            f"which is no longer running") in caplog.text
    holder = _python(_CLAIM, out, 2)
    assert holder.stdout.readline().strip() == "held"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="speechmi_jax.locks"):
        with locks.hold(out / "speechmi.lock", what="run folder", wait=True):
            assert holder.wait() == 0  # it released the folder before we got it
    assert f"is in use by pid {holder.pid}" in caplog.text and "waiting for it" in caplog.text


def test_a_holder_that_has_not_named_itself_yet_is_named(tmp_path):
    """Between taking the flock and writing its name a holder's lock file is empty; a second
    process that arrives then names the holder once it has written. Catches: "the lock file
    names none" when two commands start together (seen when the machine was loaded)."""
    import fcntl
    import threading

    from speechmi_jax import locks
    path = tmp_path / "speechmi.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, the name not written yet
    late = threading.Timer(0.3, lambda: os.pwrite(fd, json.dumps({"pid": 4242, "host": "h"}).encode(), 0))
    late.start()
    try:
        with pytest.raises(locks.FolderBusy, match="is in use by pid 4242 on host h "):
            with locks.hold(path, what="run folder"):
                pass
    finally:
        late.join()
        os.close(fd)


def test_cli_on_a_folder_in_use_names_the_holder_and_writes_nothing(tmp_path, capsys):
    """``speechmi run`` on a run folder another process holds: one line naming the holder,
    exit 1, no config.json. Catches: the second run starting to write the folder."""
    from speechmi_jax import cli, locks
    from speechmi_jax.configs import demo
    out = tmp_path / "run"
    with locks.hold(out / "speechmi.lock", what="run folder"):
        code = cli.main(["run", demo.__file__, "--out", str(out), "--set", "corpus=/nonexistent"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"speechmi: error: FolderBusy: run folder {out} is in use by pid {os.getpid()}" in err
    assert not (out / "config.json").exists()


_EXTRACT = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from speechmi_jax import load_corpus, load_encoder
    from speechmi_jax.features import extract_features
    cache, go = sys.argv[1], sys.argv[2]
    enc = load_encoder("logmel")
    call = type(enc).__call__
    calls = []
    def paused(self, *a, **k):  # after its first batch, wait for the test's go-ahead
        calls.append(1)
        while len(calls) == 2 and not os.path.exists(go):
            time.sleep(0.05)
        return call(self, *a, **k)
    type(enc).__call__ = paused
    corpus = load_corpus("bundled")
    keep = {u.id for u in corpus.utterances[:6]}
    fs = extract_features(enc, corpus.filter(lambda u: u.id in keep), cache, batch_size=3,
                          progress=False)
    print("result", len(calls), float(np.asarray(fs.hidden, np.float64).sum()), flush=True)
""")


def test_two_runs_sharing_a_feature_cache_never_read_a_half_written_entry(tmp_path):
    """Process A extracts a cache entry and pauses after its first batch; process B, started
    then on the same cache, must wait for A's entry lock and read A's finished entry (no
    encoder call). Catches: B resuming into A's ``.partial`` folder while A writes it (two
    writers; one renames the folder under the other)."""
    cache, go = tmp_path / "cache", tmp_path / "go"
    a = _python(_EXTRACT, cache, go)
    b = None
    try:
        while not list(cache.glob("*.partial/done.npy")) and a.poll() is None:
            time.sleep(0.05)
        assert a.poll() is None, a.communicate()[0]
        with open(tmp_path / "b.log", "w") as log_b:
            b = subprocess.Popen([sys.executable, "-c", _EXTRACT, str(cache), str(go)],
                                 env=child_env(), stdout=log_b,
                                 stderr=subprocess.STDOUT, text=True)
            while "waiting for it to finish" not in (tmp_path / "b.log").read_text() \
                    and b.poll() is None:
                time.sleep(0.05)
    finally:
        go.touch()
    out_a, out_b = a.communicate()[0], (b.wait(), (tmp_path / "b.log").read_text())[1]
    assert a.returncode == 0 and b.returncode == 0, (out_a, out_b)
    assert "feature cache entry" in out_b and "waiting for it to finish" in out_b, out_b
    res_a = out_a.split("result ")[1].split()
    res_b = out_b.split("result ")[1].split()
    assert res_a[0] == "2" and res_b[0] == "0"  # A encoded every batch, B none
    assert res_a[1] == res_b[1]
    entries = sorted(p.name for p in cache.iterdir() if p.name != "xla")
    assert len(entries) == 2 and entries[1] == entries[0] + ".lock", entries


# ------------------------------------------------------------------------------ round 2: small splits

def test_a_partial_dev_batch_scores_its_real_rows_alone():
    """A dev split of 3 utterances with batch_size=8: one batch, filled with 5 empty rows (the
    sharded batch shape stays 8); APC's dev metrics on it equal those of the 3 rows as a
    batch of their own (losses count real frames; random draws of the real rows do not depend
    on the rows after them). Catches: the split being refused (``fewer than batch_size``), or
    the empty rows entering the metrics. (Checked by hand for VQ-APC, HuBERT, data2vec and
    wav2vec 2.0 too: equal to 2e-5 relative.)"""
    from speechmi_jax.ssl import data as data_lib
    from speechmi_jax.ssl import trainer
    _, config = trainer.load_pretrain_config("apc", ["crop_seconds=0.2"], smoke=True)
    task = trainer.build_task(config, None, None, None)
    rng = np.random.default_rng(0)
    dev = data_lib.AudioSet([(0.1 * rng.standard_normal(n)).astype(np.float32)
                             for n in (3200, 2400, 1800)], ["a", "b", "c"])
    (padded,) = data_lib.dev_batches(dev, 8, 3200, task.frame_hop)
    (alone,) = data_lib.dev_batches(dev, 3, 3200, task.frame_hop)
    assert padded["audio"].shape == (8, 3200) and list(padded["lengths"]) == [3200, 2400, 1800] + [0] * 5
    params, aux = task.init(jax.random.PRNGKey(0))
    hp = {"lr": 1e-3, "mask_prob": 0.65, "shift": 3}
    metrics = jax.jit(lambda b: task.loss(params, aux, b, jax.random.PRNGKey(1), hp, False)[1])
    a, b = jax.device_get(metrics(padded)), jax.device_get(metrics(alone))
    assert np.isfinite(list(a.values())).all()
    for k in b:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, err_msg=k)


def test_small_dev_split_pretrains_and_a_second_writer_is_refused(tmp_path):
    """Two ``speechmi pretrain apc --smoke`` on one ``--out`` started at once, with a dev split
    of 6 utterances (fewer than batch_size=8): one trains to the end (its dev metrics from the
    partial batch are finite), the other exits 1 at once with one line naming the holder.
    Catches: ``the dev split has 6 utterances, fewer than batch_size=8`` stopping
    pretraining, and two writers in one folder."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "speechmi_jax.cli", "pretrain", "apc", "--smoke", "--out",
           str(out), "--set", "max_dev_utterances=6", "--set", "steps=2", "--set",
           "checkpoint_every=2"]
    env = child_env()
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate() for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 1], outs
    ok = [p.returncode for p in procs].index(0)
    err = outs[1 - ok][1].strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"run folder {out} is in use by pid {procs[ok].pid} on host" in err, err
    from speechmi_jax.ssl import trainer
    records = trainer.read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 2]
    assert all(np.isfinite(r["dev_loss"]) and np.isfinite(r["dev_bound_bits"]) for r in records)


def _manifest(folder: Path, splits, header="id\taudio\tspeaker\tsplit") -> Path:
    """A manifest of bundled audio files, one row per entry of ``splits``."""
    from speechmi_jax.configs import demo
    bundled = Path(demo.__file__).resolve().parents[1] / "data" / "bundled"
    rows = [line.split("\t") for line in (bundled / "manifest.tsv").read_text().splitlines()[1:]]
    folder.mkdir(parents=True, exist_ok=True)
    lines = [header]
    for (uid, audio, speaker, *_), split in zip(rows, splits):
        shutil.copy(bundled / audio, folder / Path(audio).name)
        lines.append(f"{uid}\t{Path(audio).name}\t{speaker}\t{split}")
    path = folder / "manifest.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_split_left_without_utterances_is_one_line_naming_it_and_the_filter(tmp_path, capsys):
    """A run on a corpus with no 'test' utterance: one line naming the split and the corpus'
    splits, exit 1, before config.json or features are written; the speaker measure's domain
    filter leaving a split empty names the filter. Catches: the run extracting features and
    failing later with ``y[split == 'test'] (labelled) has 0 items``."""
    from types import SimpleNamespace

    from speechmi_jax import cli, measures
    from speechmi_jax.configs import demo
    manifest = _manifest(tmp_path / "corpus", ["train", "train", "dev"])
    out = tmp_path / "run"
    code = cli.main(["run", demo.__file__, "--out", str(out), "--set", f"corpus={manifest}",
                     "--set", "encoders=['logmel']"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert (f"split 'test' has no usable utterance: no utterance of corpus '{manifest}' is in it "
            f"(splits: dev 1, train 2)") in err
    assert not (out / "config.json").exists() and not (out / "cache").exists()

    utt = lambda i, split, domain: SimpleNamespace(id=f"u{i}", metadata={"domain": domain})
    corpus = [utt(0, "train", "synthetic"), utt(1, "train", "synthetic"), utt(2, "test", "real")]
    fs = SimpleNamespace(utt_ids=["u0", "u1", "u2"], splits=["train", "train", "test"],
                         speakers=["a", "b", "c"], utt_index=np.array([0, 1, 2]),
                         phone=np.array([1, 1, 1]), phone_set=("sil", "aa"))
    with pytest.raises(ValueError, match=r"split 'test' has no usable utterance: "
                                         r"speaker_domain='synthetic' keeps none of its 1 "
                                         r"utterances \(their domains: \['real'\]\)"):
        measures.speaker_labels(fs, corpus, "synthetic")


# ------------------------------------------------------------------------------ round 2: pointers

def test_a_pretraining_run_folder_given_as_an_encoder_loads_its_model(tmp_path, caplog):
    """``load_encoder(<pretraining run folder>)`` loads its ``model/`` (and logs it); a
    population's folder, an unfinished run and a ``speechmi run`` folder each say where the
    model is or what the folder is. Catches: ``no config.json (expected a Hugging Face model
    directory)`` without a word about ``model/``."""
    import logging

    from speechmi_jax import zoo
    model = zoo.resolve(f"{zoo.names()[0]}@step0")
    run = tmp_path / "run"
    shutil.copytree(model, run / "model")
    (run / "pretrain_config.json").write_text("{}")
    with caplog.at_level(logging.INFO, logger="speechmi_jax.encoders"):
        enc = smi.load_encoder(run)
    assert enc.num_layers == smi.load_encoder(model).num_layers
    assert f"{run} is a pretraining run folder: loading its exported encoder {run / 'model'}" in caplog.text
    pop = tmp_path / "pop"
    for i in range(2):
        shutil.copytree(model, pop / f"member-{i}" / "model")
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"it is a pretraining run of 2 models: load one of {pop / 'member-0' / 'model'}, "
            f"{pop / 'member-1' / 'model'}")):
        smi.load_encoder(pop)
    shutil.rmtree(run / "model")
    shutil.copytree(model, run / "models" / "step600")
    with pytest.raises(FileNotFoundError, match=r"looked for config.json with model.safetensors.*"
                                                r"model/ is not exported yet .*models along "
                                                r"training: .*step600"):
        smi.load_encoder(run)
    results = tmp_path / "results"
    (results / "parts").mkdir(parents=True)
    (results / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="is a `speechmi run` folder"):
        smi.load_encoder(results)
    empty = tmp_path / "weights_only"
    empty.mkdir()
    (empty / "notes.txt").write_text("")
    with pytest.raises(FileNotFoundError, match=r"no model files \(looked for config.json with "
                                                r"model.safetensors.*model.bin.*holds \['notes.txt'\]"):
        smi.load_encoder(empty)


def test_a_misnamed_manifest_column_lists_the_expected_ones(tmp_path):
    """A manifest whose header says ``Audio`` / ``wav`` for ``audio``: the error names the
    header, the missing column, a close match and every expected column. Catches: ``row 1
    lacks required column(s) ['audio']`` listing only the columns found."""
    from speechmi_jax.data.manifest import ManifestError, read_manifest
    path = _manifest(tmp_path, ["train"], header="id\tAudio\tspeaker\tsplit")
    with pytest.raises(ManifestError, match=re.escape(
            f"{path}: the header has no column 'audio' (is 'Audio' meant to be 'audio'?); its "
            f"columns are ['id', 'Audio', 'speaker', 'split']; expected columns audio and speaker "
            f"(required); id, text, split, alignment, alignment_format (optional)")):
        read_manifest(path)
    path.write_text(path.read_text().replace("Audio", "wav"))
    with pytest.raises(ManifestError, match=r"no column 'audio'; its columns .*expected columns "
                                            r"audio and speaker \(required\)"):
        read_manifest(path)


def test_a_pretraining_run_started_before_a_config_key_existed_still_resumes(tmp_path, caplog):
    """A run folder written before a config key was added (here ``targets.unmasked_weight``,
    whose default keeps the old behaviour) resumes under the new code: its stored config and its
    checkpoints' identity lack the key. A value other than the default is another config.
    Catches: ``holds a different config`` (or a checkpoint of ``a different run``) for every
    run started before an upgrade."""
    import logging

    from speechmi_jax.ssl import trainer
    sets = ["steps=2", "checkpoint_every=2"]
    _, old = trainer.load_pretrain_config("apc", sets, smoke=True)
    del old.targets.unmasked_weight  # the config as the older code wrote it
    out = tmp_path / "run"
    trainer.pretrain(old, out, progress=False)
    stored = (out / "pretrain_config.json").read_text()
    assert "unmasked_weight" not in stored
    metrics = (out / "metrics.jsonl").read_text()
    _, new = trainer.load_pretrain_config("apc", sets, smoke=True)
    with caplog.at_level(logging.INFO, logger="speechmi_jax"):  # rundir says it, ssl resumes
        trainer.pretrain(new, out, progress=False)  # restores its step-2 checkpoint
    assert "was written before config keys were added" in caplog.text
    assert (out / "pretrain_config.json").read_text() == stored
    assert (out / "metrics.jsonl").read_text() == metrics
    _, other = trainer.load_pretrain_config("apc", [*sets, "targets.unmasked_weight=0.5"], smoke=True)
    with pytest.raises(ValueError, match="holds a different config"):
        trainer.pretrain(other, out, progress=False)
