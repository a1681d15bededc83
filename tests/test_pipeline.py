"""The experiment pipeline and the ``speechmi`` command: views, labels, configs, the run
directory (stale, damaged and reused parts, kill and resume), encoder windows, CLI errors."""

import dataclasses
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from speechmi_jax import cli, measures, pipeline
from speechmi_jax.configs import base as config_base
from speechmi_jax.configs import demo
from speechmi_jax.data import phones
from speechmi_jax.estimators import views
from speechmi_jax.rundir import RunDir
from resume_testing import checkpoint_steps
from xla_env import child_env  # tests/xla_env.py

BUNDLED = Path(demo.__file__).resolve().parents[1] / "data" / "bundled"


def test_frame_view_gathers_rows_like_fancy_indexing():
    hidden = np.arange(3 * 10 * 2, dtype=np.float32).reshape(3, 10, 2)
    frames = np.array([9, 2, 4, 4, 0])
    v = views.FrameView(hidden, frames)
    assert v.shape == (3, 5, 2) and v.ndim == 3
    idx = np.array([3, 0, 1])
    np.testing.assert_array_equal(v[1:3][:, idx], hidden[1:3][:, frames[idx]])


def test_rows_load_as_one_c_ordered_float32_block():
    """The banks' loader gathers a layer at a time: numpy's ``hidden[:, idx]`` lays rows out
    item-major, and every later reshape or device copy of such a block copies it again."""
    from speechmi_jax.estimators.api import load_rows
    hidden = np.random.default_rng(0).normal(size=(4, 50, 3)).astype(np.float16)
    frames = np.array([7, 3, 3, 40, 0, 12])
    idx = np.array([5, 0, 2, 1])
    for x in (hidden, views.FrameView(hidden, frames)):
        rows = frames[idx] if isinstance(x, views.FrameView) else idx
        out = load_rows("z", x, slice(1, 4), idx)
        assert out.dtype == np.float32 and out.flags.c_contiguous and out.flags.writeable
        np.testing.assert_array_equal(out, hidden[1:4][:, rows].astype(np.float32))


def _logmel_features(tmp_path, n_per_split=3):
    from speechmi_jax import load_corpus, load_encoder
    from speechmi_jax.features import extract_features
    corpus = load_corpus("bundled")
    keep = {u.id for s in corpus.splits for u in corpus.split(s).utterances[:n_per_split]}
    corpus = corpus.filter(lambda u: u.id in keep)
    return corpus, extract_features(load_encoder("logmel"), corpus, tmp_path, progress=False)


def test_input_context_is_centred_on_the_frame(tmp_path):
    corpus, lm = _logmel_features(tmp_path)
    ctx = views.input_context(lm, lm, context_s=0.02)  # 2 log-mel frames each side
    d = lm.hidden.shape[2]
    assert ctx.shape == (lm.num_frames, 5 * d)
    # The middle block of each window is the frame itself.
    np.testing.assert_array_equal(ctx[:, 2 * d:3 * d], np.asarray(lm.layer(0)))
    # Away from utterance edges, the first block is the frame two steps earlier.
    f0, f1 = int(lm.utt_offsets[0]), int(lm.utt_offsets[1])
    np.testing.assert_array_equal(ctx[f0 + 2:f1, :d], np.asarray(lm.layer(0)[f0:f1 - 2]))


def test_speaker_labels_keep_one_domain_and_speech_frames(tmp_path):
    corpus, lm = _logmel_features(tmp_path)
    y, names = measures.speaker_labels(lm, corpus, "synthetic")
    domain = {u.id: u.metadata["domain"] for u in corpus}
    assert "allison" not in names and len(names) == len(corpus.speakers) - 1
    real = np.array([domain[lm.utt_ids[u]] == "real" for u in lm.utt_index])
    assert (y[real] == -1).all()
    sil = lm.phone_set.index(phones.SILENCE)
    assert (y[lm.phone == sil] == -1).all()
    speech = (~real) & (lm.phone >= 0) & (lm.phone != sil)
    assert (y[speech] >= 0).all()
    assert [names[i] for i in y[speech]] == [lm.speakers[u] for u in lm.utt_index[speech]]


def test_labels_follow_the_feature_sets_phone_set(tmp_path):
    """Another phone set (here: the same phones in reverse order, as a corpus with its own
    set would write) gives labels in that set; one without silence is a clear error."""
    corpus, lm = _logmel_features(tmp_path, n_per_split=2)
    rev = tuple(reversed(lm.phone_set))
    flip = np.array([rev.index(p) for p in lm.phone_set])
    other = dataclasses.replace(lm, phone_set=rev, phone=np.where(lm.phone >= 0, flip[lm.phone], -1))
    for a, b in zip(measures.ctc_targets(lm, corpus), measures.ctc_targets(other, corpus)):
        assert [lm.phone_set[i] for i in a] == [rev[i] for i in b] and a.size > 0
    y, _ = measures.speaker_labels(lm, corpus, None)
    y2, _ = measures.speaker_labels(other, corpus, None)
    np.testing.assert_array_equal(y, y2)  # silence frames found in either order
    no_sil = dataclasses.replace(lm, phone_set=tuple(p for p in lm.phone_set if p != "sil"))
    with pytest.raises(ValueError, match="phone set has no 'sil' label"):
        measures.ctc_targets(no_sil, corpus)
    with pytest.raises(ValueError, match="not in the feature set's phone set"):
        measures.ctc_targets(dataclasses.replace(lm, phone_set=lm.phone_set[20:]), corpus)


def test_seen_in_train_unlabels_only_unseen_heldout_classes():
    y = np.array([0, 1, 1, 2, 3, -1, 0])
    s = np.array(["train", "train", "test", "test", "dev", "test", "test"])
    np.testing.assert_array_equal(measures.seen_in_train(y, s, "t"), [0, 1, 1, -1, -1, -1, 0])


def test_measure_registry_matches_the_results_schema():
    from speechmi_jax.analysis import results
    written = [r for m in measures.REGISTRY.values() for r in m.records]
    assert len(written) == len(set(written)) and set(written) <= set(results.MEASURES)
    assert list(config_base.base_config().measures) == list(measures.REGISTRY)


# ------------------------------------------------------------------------------ configs


def test_config_overrides_and_errors(tmp_path):
    c = cli.load_config(demo.__file__, ["probe.steps=7", "encoders=['logmel']", "corpus=bundled",
                                        "views.max_pairs=10", "whisper_window_seconds=None",
                                        "infonce.eval_every=50"])
    assert c.infonce.eval_every == 50  # an estimator argument the config left at its default
    assert c.probe.steps == 7 and list(c.encoders) == ["logmel"] and c.corpus == "bundled"
    assert c.views.max_pairs == 10 and c.whisper_window_seconds is None
    for override, match in [
            ("probe.nope=1", "no key 'probe.nope'"),
            ("probe.steps", "expected key=value"),
            ("seed=None", "'seed': expected an int, got None"),
            ("probe.steps=1.5", "wrong type for 'probe.steps'"),
            ("encoders=logmel", "wrong type for 'encoders'"),
            ("measures=['phon']", r"'measures': unknown \['phon'\]"),
            ("encoders=['logmel','logmel']", "'logmel' is listed twice"),
            ("encoders=['a/b','a_b']", "same file name"),
            ("probe.l2=('x',)", r"'probe.l2\[0\]': expected a number"),
            ("encoder_dtype=float16", "'encoder_dtype'"),
            ("views.next_k_seconds=0", "expected > 0"),
            ("views.num_codes=1", "expected an integer >= 2 \\(codes\\)"),
            ("infonce_same.lr=1", "no key 'infonce_same.lr'")]:
        with pytest.raises(cli.ConfigError, match=match):
            cli.load_config(demo.__file__, [override])
    with pytest.raises(cli.ConfigError, match="not found"):
        cli.load_config(tmp_path / "missing.py")
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(cli.ConfigError, match="defines no get_config"):
        cli.load_config(bad)
    assert cli.main(["run", str(bad)]) == 2
    # a config file that adds a key of its own, or an estimator argument that does not exist
    extra = tmp_path / "extra.py"
    extra.write_text("from speechmi_jax.configs import base\n"
                     "def get_config(arg=''):\n    c = base.base_config()\n    c.foo = 1\n"
                     "    return c\n")
    with pytest.raises(cli.ConfigError, match=r"unknown \['foo'\]"):
        cli.load_config(extra)
    c = config_base.base_config()
    c.infonce.lr = 1e-3
    with pytest.raises(cli.ConfigError, match="'infonce.lr' is not a setting of infonce"):
        config_base.validate(c)
    c = config_base.base_config()
    c.infonce_same.seed = 1  # the run's seed is passed to the same-utterance bank
    with pytest.raises(cli.ConfigError, match="'infonce_same.seed' is set by the pipeline"):
        config_base.validate(c)


def test_a_refused_config_writes_nothing(tmp_path, capsys):
    """A mistyped --set is refused before config.json is written; the corrected command then
    owns the directory."""
    out = tmp_path / "run"
    assert cli.main(["demo", "--out", str(out), "--set", "measures=['phon']"]) == 2
    assert "config error" in capsys.readouterr().err
    assert not (out / "config.json").exists()
    c = cli.load_config(demo.__file__, _tiny_overrides())
    RunDir(out, c.to_json(indent=1, sort_keys=True))
    assert (out / "config.json").exists()
    c2 = cli.load_config(demo.__file__, _tiny_overrides(["probe.steps=16"]))
    with pytest.raises(ValueError, match="holds a different config"):
        RunDir(out, c2.to_json(indent=1, sort_keys=True))


def test_cli_expected_errors_are_one_line_unless_debug(tmp_path, capsys):
    args = ["demo", "--out", str(tmp_path / "r"), "--set", "encoders=['random:hubert-base@x']",
            "--set", "max_utterances_per_split=2", "--set", "progress=False"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "'random:hubert-base@x'" in err and "is not an integer" in err
    with pytest.raises(ValueError, match="is not an integer"):
        cli.main(args + ["--debug"])


# ------------------------------------------------------------------------------ encoders


def test_load_encoder_window_follows_the_model_not_the_name(tmp_path):
    """A Whisper folder named without "whisper" gets the window; a wav2vec 2.0 folder named
    "whisper..." loads (it has no window to set)."""
    torch = pytest.importorskip("torch")
    import transformers

    from speechmi_jax import load_encoder
    sys.path.insert(0, str(Path(__file__).parent))
    from wav2vec2_testing import tiny_config as w2v_config
    from whisper_testing import tiny_config as whisper_config
    torch.manual_seed(0)
    plain = tmp_path / "model_a"
    transformers.WhisperForConditionalGeneration(whisper_config()).save_pretrained(plain)
    enc = load_encoder(plain, window_seconds=4.0)
    assert enc.config.window_seconds == 4.0 and enc.name.endswith("@4s")
    assert load_encoder(plain).config.window_seconds == 30.0
    lookalike = tmp_path / "whisper_like"
    transformers.Wav2Vec2Model(w2v_config("wav2vec2")).save_pretrained(lookalike)
    enc = load_encoder(lookalike, window_seconds=4.0)
    assert enc.num_layers == 3 and not enc.name.endswith("@4s")
    # the pipeline takes the window from the config, whatever the encoder's name
    c = config_base.base_config()
    c.whisper_window_seconds = 4.0
    assert pipeline.configured_encoder(str(plain), c).config.window_seconds == 4.0
    assert pipeline.configured_encoder("random:whisper-tiny@3", c).name == "random:whisper-tiny@3@4s"


# ------------------------------------------------------------------------------ runs


def _tiny_overrides(out_extra=()):
    return ["encoders=['logmel']", "max_utterances_per_split=6", "measures=['phone','infonce_next_k']",
            "progress=False", "probe.steps=15", "probe.l2=(0.0,)", "probe.num_bootstrap=50",
            "infonce.k=16", "infonce.steps=40", "infonce.eval_every=10",
            "infonce.learning_rates=(3e-3,)",
            "infonce.num_bootstrap=50", "views.max_pairs=3000", "infonce_same.k=16",
            "infonce_same.steps=40", "infonce_same.learning_rates=(3e-3,)",
            "infonce_same.num_bootstrap=50", "views.num_codes=16", *out_extra]


def _run_cli(out, extra=(), own_compile_cache=False):
    args = [sys.executable, "-m", "speechmi_jax.cli", "demo", "--out", str(out)]
    for o in _tiny_overrides(extra):
        args += ["--set", o]
    env = child_env()
    if own_compile_cache:  # the default: the user's cache, here <out>.user/xla (every compile kept)
        env.pop("JAX_COMPILATION_CACHE_DIR")
        env["SPEECHMI_CACHE"] = f"{out}.user"
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def _values(run_dir):
    doc = json.loads((Path(run_dir) / "results.json").read_text())
    return {(r["encoder"], r["layer"], r["measure"]): (r["value"], tuple(r["ci"])) for r in doc["records"]}


def test_demo_run_is_interruptible_and_resumes_to_the_same_results(tmp_path):
    """Kill -9 after the first measure is saved and before the second is, then SIGTERM in the
    second measure: the rerun reuses the finished part (the file is not rewritten), resumes
    the second from the step SIGTERM checkpointed, and ends with the clean run's numbers.
    Catches (SIGTERM): the signal killing the run where it stood (exit -15, no word on
    resuming)."""
    clean = _run_cli(tmp_path / "clean", own_compile_cache=True)
    out, _ = clean.communicate(timeout=600)
    assert clean.returncode == 0, out
    assert any((tmp_path / "clean.user" / "xla").iterdir())  # executables cached for the user
    assert not (tmp_path / "clean" / "cache" / "xla").exists()
    ref = _values(tmp_path / "clean")
    assert {m for _, _, m in ref} == {"phone_mi", "phone_acc", "infonce_next_k"}
    assert all(np.isfinite(v) for v, _ in ref.values())

    run_dir = tmp_path / "killed"
    p = _run_cli(run_dir)
    first = run_dir / "parts" / "logmel__phone.json"
    second = run_dir / "parts" / "logmel__infonce_next_k.json"
    deadline = time.time() + 600
    while not first.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.exists() and p.poll() is None, "the first measure never finished mid-run"
    p.send_signal(signal.SIGKILL)
    p.wait()
    # the kill landed mid-run: the second measure and the results were not written
    assert not second.exists() and not (run_dir / "results.json").exists()
    saved = (first.read_bytes(), first.stat().st_mtime_ns)

    # SIGTERM once the second measure's bank has started: it stops after the bank's next chunk
    # of steps, checkpoints that step, says how to resume and exits 128 + 15
    p = _run_cli(run_dir)
    banks = run_dir / "checkpoints" / "logmel"
    while not list(banks.glob("infonce_next_k-*")) and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 143, out
    line = [l for l in out.splitlines() if l.startswith("speechmi: stopped by SIGTERM")]
    assert line and "at logmel / infonce_next_k, step " in line[0], out
    assert "to resume, run the same command again: speechmi demo --out" in line[0]
    (bank,) = banks.glob("infonce_next_k-*")
    assert checkpoint_steps(bank) and not second.exists()

    again = _run_cli(run_dir)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    assert (first.read_bytes(), first.stat().st_mtime_ns) == saved, "the finished part was redone"
    timings = json.loads((run_dir / "results.json").read_text())["metadata"]["timings_s"]["logmel"]
    assert timings["phone_s"] == json.loads(saved[0])["seconds"]
    got = _values(run_dir)
    assert got.keys() == ref.keys()
    for key in ref:
        np.testing.assert_allclose(got[key][0], ref[key][0], rtol=0, atol=1e-6, err_msg=str(key))


def _small_manifest(folder: Path, per_split: int = 3) -> Path:
    """A manifest of a few synthetic bundled utterances per split, audio copied into ``folder``."""
    lines = (BUNDLED / "manifest.tsv").read_text().splitlines()
    head, rows = lines[0], [l.split("\t") for l in lines[1:]]
    cols = head.split("\t")
    picked, count = [], {}
    for r in rows:
        row = dict(zip(cols, r))
        if row["domain"] != "synthetic" or count.get(row["split"], 0) >= per_split:
            continue
        count[row["split"]] = count.get(row["split"], 0) + 1
        dst = folder / row["audio"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BUNDLED / row["audio"], dst)
        picked.append("\t".join(r))
    shutil.copy(BUNDLED / "alignments.tsv", folder / "alignments.tsv")
    path = folder / "manifest.tsv"
    path.write_text("\n".join([head] + picked) + "\n")
    return path


def test_executables_are_dropped_when_the_feature_shape_changes(tmp_path, monkeypatch):
    """log-mel [1, N, 80] then MFCC [1, N, 39]: the run drops the compiled executables once,
    before MFCC's measures, and the probe bank's jit cache is empty then (log-mel's programs
    gone; the demo's encoders of one shape in a row share theirs, BENCHMARKS.md "Demo")."""
    from speechmi_jax.estimators import train

    dropped = []

    def spy():
        pipeline_forget()
        dropped.append(train._train_chunk_jit._cache_size())

    pipeline_forget = pipeline.forget_executables
    monkeypatch.setattr(pipeline, "forget_executables", spy)
    config = cli.load_config(demo.__file__, _tiny_overrides([
        "encoders=['logmel','mfcc']", "measures=['phone']"]))
    res = pipeline.run_experiment(config, tmp_path / "run")
    assert {r.encoder for r in res.records} == {"logmel", "mfcc"}
    assert dropped == [0]
    assert train._train_chunk_jit._cache_size() > 0  # MFCC's, kept for the next encoder


def test_parts_are_keyed_checked_and_recomputed(tmp_path, caplog):
    """Real pipeline output: the report shows the ceilings; a rerun reuses every part; a 0-byte
    or edited part is recomputed (naming the file); new audio gives new numbers."""
    import soundfile as sf

    from speechmi_jax.analysis import results
    manifest = _small_manifest(tmp_path / "corpus")
    config = cli.load_config(demo.__file__, _tiny_overrides([
        f"corpus={manifest}", "max_utterances_per_split=0",
        "measures=['phone','infonce_next_k','infonce_next_k_same','codes_next_k']"]))
    out = tmp_path / "run"
    res = pipeline.run_experiment(config, out)
    first = {(r.layer, r.measure): r.value for r in res.records}
    phone_mi = res.get("logmel", 0, "phone_mi")
    assert 0 < phone_mi.extra["ceiling"] <= np.log2(40) and phone_mi.value <= phone_mi.extra["ceiling"]
    assert "ceiling_fraction" not in phone_mi.extra  # a supervised bound
    assert res.get("logmel", 0, "infonce_next_k").extra["ceiling"] == pytest.approx(4.0)  # K = 16
    assert res.get("logmel", 0, "infonce_next_k_same").extra["ceiling"] == pytest.approx(4.0)
    codes = res.get("logmel", 0, "codes_next_k")
    assert 0 < codes.extra["ceiling"] <= 4.0 and codes.extra["num_codes"] == 16  # H(16 codes)
    for m in ("infonce_next_k", "infonce_next_k_same", "codes_next_k"):
        r = res.get("logmel", 0, m)
        assert r.extra["ceiling_fraction"] == pytest.approx(r.value / r.extra["ceiling"])
    report = (out / "report.md").read_text()
    assert f"Ceiling (`extra.ceiling`): logmel {phone_mi.extra['ceiling']:.3f} bits" in report
    assert "Ceiling (`extra.ceiling`): logmel 4.000 bits" in report
    assert "## Saturation" in report and "label-free records" in report

    parts = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "parts").iterdir()}
    assert pipeline.run_experiment(config, out).records == res.records
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "parts").iterdir()} == parts

    phone_part, nce_part = out / "parts" / "logmel__phone.json", out / "parts" / "logmel__infonce_next_k.json"
    phone_part.write_text("")                      # torn by a crash
    doc = json.loads(nce_part.read_text())
    doc["records"][0]["value"] = 3.99              # edited by hand
    nce_part.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="speechmi_jax.rundir"):
        again = pipeline.run_experiment(config, out)
    assert f"{phone_part}: unreadable" in caplog.text
    assert f"{nce_part}: checksum mismatch" in caplog.text
    assert {(r.layer, r.measure): r.value for r in again.records} == first

    rng = np.random.default_rng(0)                 # the same files, now white noise
    for wav in (tmp_path / "corpus" / "audio").rglob("*.flac"):
        info = sf.info(str(wav))
        sf.write(str(wav), 0.1 * rng.standard_normal(info.frames), info.samplerate, subtype="PCM_16")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="speechmi_jax.rundir"):
        noise = pipeline.run_experiment(config, out)
    assert "computed for other inputs (changed: features)" in caplog.text
    phone_noise = noise.get("logmel", 0, "phone_mi").value
    assert phone_noise < phone_mi.value - 0.5, (phone_noise, phone_mi.value)
    assert results.read_results(out).get("logmel", 0, "phone_mi").value == phone_noise


CACHE_PROBE = """
import json
import jax, jax.numpy as jnp
from speechmi_jax import training
hits = []
jax.monitoring.register_event_listener(lambda e, **_: hits.append(e) if e.endswith("cache_hits") else None)
folder = training.use_compilation_cache()

def slow(w, x):  # a 12-layer MLP's gradient: ~0.3-0.5 s to compile
    def loss(w):
        h = x
        for i in range(12):
            h = jnp.tanh(h @ w[i] + i)
        return jnp.sum(h ** 2)
    return jax.grad(loss)(w)

fast = lambda x: x + 1.0  # ~0.01 s
x = jnp.ones((8, 32))
jax.block_until_ready((jax.jit(slow)(jnp.full((12, 32, 32), 0.01), x), jax.jit(fast)(x)))
print(json.dumps({"folder": folder, "hits": len(hits), "dir": jax.config.jax_compilation_cache_dir,
                  "min_s": jax.config.jax_persistent_cache_min_compile_time_secs,
                  "max_bytes": jax.config.jax_compilation_cache_max_size}))
"""


def test_executables_are_cached_once_per_user_and_a_second_process_loads_them(tmp_path):
    """``training.use_compilation_cache`` (what every run and pretraining calls): with no
    cache configured the folder is ``xla`` in the user's cache (``$SPEECHMI_CACHE``), a second
    process loads the slow program from it (a cache hit; the first process has none) and the
    cache holds the programs compiled in >= 0.1 s only; ``$JAX_COMPILATION_CACHE_DIR`` wins.
    Catches: the cache in the run folder (a new run compiles again), JAX's 1 s floor (the
    slow program not kept)."""
    env = {k: v for k, v in child_env().items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                        "JAX_COMPILATION_CACHE_MAX_SIZE")}
    env["SPEECHMI_CACHE"] = str(tmp_path / "user")
    probe = lambda e: json.loads(subprocess.run([sys.executable, "-c", CACHE_PROBE], env=e, check=True,
                                                capture_output=True, text=True).stdout.splitlines()[-1])
    first, second = probe(env), probe(env)
    folder = tmp_path / "user" / "xla"
    assert first == {**second, "hits": 0} and second["hits"] >= 1, (first, second)
    assert first["folder"] == first["dir"] == str(folder)
    assert (first["min_s"], first["max_bytes"]) == (0.1, 1 << 30)
    kept = [p for p in folder.iterdir() if "slow" in p.name]
    assert kept and not [p for p in folder.iterdir() if "lambda" in p.name], sorted(folder.iterdir())
    own = probe({**env, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "own")})
    assert own["folder"] is None and own["dir"] == str(tmp_path / "own")
    (tmp_path / "file").write_text("")  # a cache folder that cannot be made: a warning, no cache
    bad = subprocess.run([sys.executable, "-W", "always", "-c",
                          "from speechmi_jax import training; print(training.use_compilation_cache())"],
                         env={**env, "SPEECHMI_CACHE": str(tmp_path / "file")}, capture_output=True,
                         text=True, check=True)
    assert bad.stdout.split() == ["None"] and f"{tmp_path / 'file' / 'xla'} cannot be made" in bad.stderr


def test_a_run_folder_started_before_a_config_key_existed_still_resumes(tmp_path, caplog):
    """A run folder whose config and parts were written before a setting was added (here
    ``ctc.runs``, whose default 1 keeps the old behaviour) resumes under the new code: the
    folder keeps its config, the finished part is reused, not computed again (nothing is: the
    run only writes results). A value other than the default is another run.
    Catches: ``holds a different config`` for every folder started before an upgrade, or its
    finished parts computed again."""
    old = demo.get_config("smoke")
    old.update(encoders=["logmel"], measures=["ctc"], max_utterances_per_split=0)
    new = demo.get_config("smoke")
    new.update(encoders=["logmel"], measures=["ctc"], max_utterances_per_split=0)
    del old.ctc.runs  # the config as the older code wrote it (every utterance: the key below is
    # the whole corpus's)
    out = tmp_path / "run"
    old_text = old.to_json(indent=1, sort_keys=True)
    run = RunDir(out, old_text)
    stage = pipeline.FeatureStage(pipeline.load_corpus("bundled"), out / "cache", new, False)
    enc = pipeline.configured_encoder("logmel", new)
    key = stage.part_keys(enc)["ctc"]
    old_key = json.loads(json.dumps(key))
    del old_key["settings"]["ctc"]["runs"]
    record = {"encoder": "logmel", "layer": 0, "measure": "ctc_per", "value": 87.0,
              "ci": [85.0, 89.0], "unit": "percent", "extra": {}}
    part = run.save_part("logmel", "ctc", old_key, [record], 1.0)
    written = (out / "parts" / "logmel__ctc.json").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="speechmi_jax"):
        res = pipeline.run_experiment(new, out)
    assert "was written before config keys were added" in caplog.text
    assert (out / "config.json").read_text() == old_text
    assert (out / "parts" / "logmel__ctc.json").stat().st_mtime_ns == written
    assert [r.value for r in res.records] == [87.0] and part["key"] == old_key
    other = demo.get_config("smoke")
    other.update(encoders=["logmel"], measures=["ctc"], max_utterances_per_split=0)
    other.ctc.runs = 3
    with pytest.raises(ValueError, match="holds a different config"):
        pipeline.run_experiment(other, out)
    # A part written under another value of the new key is not reused.
    three = dict(key, settings={"ctc": {**key["settings"]["ctc"], "runs": 3}})
    assert RunDir(out, old_text).load_part("logmel", "ctc", three, key) is None
