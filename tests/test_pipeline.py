"""The experiment pipeline and the ``speechmi`` command: views, labels, resume, bad configs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from speechmi_jax import cli, pipeline
from speechmi_jax.configs import demo


def test_frame_view_gathers_rows_like_fancy_indexing():
    hidden = np.arange(3 * 10 * 2, dtype=np.float32).reshape(3, 10, 2)
    frames = np.array([9, 2, 4, 4, 0])
    v = pipeline.FrameView(hidden, frames)
    assert v.shape == (3, 5, 2) and v.ndim == 3
    idx = np.array([3, 0, 1])
    np.testing.assert_array_equal(v[1:3][:, idx], hidden[1:3][:, frames[idx]])


def _logmel_features(tmp_path, n_per_split=3):
    from speechmi_jax import load_corpus, load_encoder
    from speechmi_jax.features import extract_features
    corpus = load_corpus("bundled")
    keep = {u.id for s in corpus.splits for u in corpus.split(s).utterances[:n_per_split]}
    corpus = corpus.filter(lambda u: u.id in keep)
    return corpus, extract_features(load_encoder("logmel"), corpus, tmp_path, progress=False)


def test_input_context_is_centred_on_the_frame(tmp_path):
    corpus, lm = _logmel_features(tmp_path)
    ctx = pipeline.input_context(lm, lm, context_s=0.02)  # 2 log-mel frames each side
    d = lm.hidden.shape[2]
    assert ctx.shape == (lm.num_frames, 5 * d)
    # The middle block of each window is the frame itself.
    np.testing.assert_array_equal(ctx[:, 2 * d:3 * d], np.asarray(lm.layer(0)))
    # Away from utterance edges, the first block is the frame two steps earlier.
    f0, f1 = int(lm.utt_offsets[0]), int(lm.utt_offsets[1])
    np.testing.assert_array_equal(ctx[f0 + 2:f1, :d], np.asarray(lm.layer(0)[f0:f1 - 2]))


def test_speaker_labels_keep_one_domain_and_speech_frames(tmp_path):
    corpus, lm = _logmel_features(tmp_path)
    y, names = pipeline.speaker_labels(lm, corpus, "synthetic")
    domain = {u.id: u.metadata["domain"] for u in corpus}
    assert "allison" not in names and len(names) == len(corpus.speakers) - 1
    real = np.array([domain[lm.utt_ids[u]] == "real" for u in lm.utt_index])
    assert (y[real] == -1).all()
    from speechmi_jax.data import phones
    sil = phones.PHONE_TO_ID[phones.SILENCE]
    assert (y[lm.phone == sil] == -1).all()
    speech = (~real) & (lm.phone >= 0) & (lm.phone != sil)
    assert (y[speech] >= 0).all()
    assert [names[i] for i in y[speech]] == [lm.speakers[u] for u in lm.utt_index[speech]]


def test_seen_in_train_unlabels_only_unseen_heldout_classes():
    y = np.array([0, 1, 1, 2, 3, -1, 0])
    s = np.array(["train", "train", "test", "test", "dev", "test", "test"])
    np.testing.assert_array_equal(pipeline.seen_in_train(y, s, "t"), [0, 1, 1, -1, -1, -1, 0])


def test_config_overrides_and_errors(tmp_path):
    c = cli.load_config(demo.__file__, ["probe.steps=7", "encoders=['logmel']", "corpus=bundled"])
    assert c.probe.steps == 7 and list(c.encoders) == ["logmel"] and c.corpus == "bundled"
    with pytest.raises(cli.ConfigError, match="no key 'probe.nope'"):
        cli.load_config(demo.__file__, ["probe.nope=1"])
    with pytest.raises(cli.ConfigError, match="expected key=value"):
        cli.load_config(demo.__file__, ["probe.steps"])
    with pytest.raises(cli.ConfigError, match="not found"):
        cli.load_config(tmp_path / "missing.py")
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(cli.ConfigError, match="defines no get_config"):
        cli.load_config(bad)
    assert cli.main(["run", str(bad)]) == 2


def _tiny_overrides(out_extra=()):
    return ["encoders=['logmel']", "max_utterances_per_split=6", "measures=['phone','infonce_next_k']",
            "progress=False", "probe.steps=15", "probe.l2=(0.0,)", "probe.num_bootstrap=50",
            "infonce.k=16", "infonce.steps=40", "infonce.learning_rates=(3e-3,)",
            "infonce.num_bootstrap=50", "infonce.max_pairs=3000", *out_extra]


def _run_cli(out, extra=(), **kw):
    args = [sys.executable, "-m", "speechmi_jax.cli", "demo", "--out", str(out)]
    for o in _tiny_overrides(extra):
        args += ["--set", o]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "XLA_FLAGS": ""}, **kw)


def _values(run_dir):
    doc = json.loads((Path(run_dir) / "results.json").read_text())
    return {(r["encoder"], r["layer"], r["measure"]): (r["value"], tuple(r["ci"])) for r in doc["records"]}


def test_demo_run_is_interruptible_and_resumes_to_the_same_results(tmp_path):
    """Kill -9 after the first measure is saved; the rerun resumes and matches a clean run."""
    clean = _run_cli(tmp_path / "clean")
    out, _ = clean.communicate(timeout=600)
    assert clean.returncode == 0, out
    ref = _values(tmp_path / "clean")
    assert {m for _, _, m in ref} == {"phone_mi", "phone_acc", "infonce_next_k"}
    assert all(np.isfinite(v) for v, _ in ref.values())
    assert (tmp_path / "clean" / "report.md").read_text().count("logmel") > 0

    run_dir = tmp_path / "killed"
    p = _run_cli(run_dir)
    part = run_dir / "parts" / "logmel__phone.json"
    deadline = time.time() + 600
    while not part.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert part.exists(), "the first measure never finished"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (run_dir / "results.json").exists() or p.returncode == 0

    again = _run_cli(run_dir)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    got = _values(run_dir)
    assert got.keys() == ref.keys()
    for key in ref:
        np.testing.assert_allclose(got[key][0], ref[key][0], rtol=0, atol=1e-6, err_msg=str(key))


def test_run_dir_of_another_config_is_refused(tmp_path):
    c = cli.load_config(demo.__file__, _tiny_overrides())
    pipeline.Run(tmp_path, c)
    c2 = cli.load_config(demo.__file__, _tiny_overrides(["probe.steps=16"]))
    with pytest.raises(ValueError, match="holds a different config"):
        pipeline.Run(tmp_path, c2)
