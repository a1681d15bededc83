"""The experiment configs: their settings, docstrings, and a real ``--smoke`` run of each (that of
``ssl_base_librispeech`` is the TPU-sweep notebook's, sharded over 8 devices: test_colab.py).

The smoke runs go through the ``speechmi`` command in a subprocess, on the bundled corpus,
with tiny random Hugging Face checkpoints written here by transformers (torch), and check
what comes out: a record for every encoder x hidden state x measure, finite values inside
their ceilings, and the report. The runs share the test run's persistent XLA compilation cache
(tests/conftest.py), so the estimator banks compile once for all of them (the tiny models have
equal shapes).
"""

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from speechmi_jax import cli
from run_checks import GROUP_MEASURES, check_run  # tests/run_checks.py
from xla_env import child_env  # tests/xla_env.py

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"
CONFIG_NAMES = ("ssl_base_librispeech", "ssl_large_librispeech", "whisper_bundled")


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"speechmi_test_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smoke_env() -> dict:
    """The test process' environment (offline hub, the shared XLA cache: tests/conftest.py) on
    one simulated device, without progress bars."""
    return child_env(TQDM_DISABLE="1")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """{"base": [4 paths], "large": [4 paths]}: tiny random checkpoints of the four families."""
    pytest.importorskip("torch")
    tiny = load_module(ROOT / "experiments" / "tiny_checkpoints.py")
    out = tmp_path_factory.mktemp("tiny_checkpoints")
    return {style: tiny.write_tiny_checkpoints(out, large=style == "large")
            for style in ("base", "large")}


def run_smoke(config: str, out: Path, encoders, env, *extra) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "speechmi_jax.cli", "run", str(CONFIGS / f"{config}.py"),
            "--smoke", "--out", str(out), "--set", f"encoders={json.dumps(list(encoders))}",
            "--set", "progress=False", *extra]
    proc = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


# ------------------------------------------------------------------------------ the configs


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_docstring_says_what_how_and_how_long(name):
    doc = load_module(CONFIGS / f"{name}.py").__doc__
    assert "Reproduces" in doc and "Liu, Yeh & Glass" in doc
    assert f"speechmi run experiments/configs/{name}.py --out" in doc
    assert f"speechmi run experiments/configs/{name}.py --smoke" in doc
    assert "Expected cost" in doc and "estimate" in doc


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_full_and_smoke_settings(name):
    path = CONFIGS / f"{name}.py"
    full = cli.load_config(path)
    smoke = cli.load_config(path, arg="smoke")
    module = load_module(path)
    assert list(full.encoders) == module.ENCODERS
    assert smoke.corpus == "bundled" and 0 < smoke.max_utterances_per_split <= 8
    assert list(smoke.measures) == list(full.measures)
    # smoke shrinks every estimator; the full run keeps the paper-scale settings
    assert smoke.probe.steps < full.probe.steps and smoke.infonce.steps < full.infonce.steps
    assert smoke.ctc.num_steps < full.ctc.num_steps and smoke.infonce.k < full.infonce.k
    assert full.infonce.k == 128 and full.probe.num_bootstrap == 1000
    with pytest.raises(ValueError, match="unknown config argument 'fast'"):
        module.get_config("fast")


def test_every_config_builds_on_the_one_base_schema():
    """The demo and the experiments set the same keys (those of configs/base.py), with the
    view settings in their own sub-config, and pass its validation."""
    from speechmi_jax.configs import base, demo
    schema = base.base_config()
    for path in [Path(demo.__file__)] + [CONFIGS / f"{n}.py" for n in CONFIG_NAMES]:
        for arg in ("", "smoke"):
            c = cli.load_config(path, arg=arg)
            assert set(c) == set(schema), path
            assert set(c.views) == set(schema.views) and not set(c.views) & set(c.infonce), path
            assert c.allow_pickle is False


def test_ssl_configs_name_the_paper_checkpoints():
    base = cli.load_config(CONFIGS / "ssl_base_librispeech.py")
    large = cli.load_config(CONFIGS / "ssl_large_librispeech.py")
    assert set(base.encoders) == {"facebook/wav2vec2-base", "facebook/hubert-base-ls960",
                                  "microsoft/wavlm-base-plus", "facebook/data2vec-audio-base",
                                  "logmel"}
    assert set(large.encoders) == {"facebook/wav2vec2-large-lv60", "facebook/hubert-large-ll60k",
                                   "microsoft/wavlm-large", "facebook/data2vec-audio-large",
                                   "logmel"}
    for c in (base, large):
        # LibriSpeech splits are speaker-disjoint: no speaker probe; the manifest is the prepared one
        assert "speaker" not in c.measures and c.speaker_domain is None
        assert c.corpus.endswith("manifest.tsv")
        # every measure the pipeline knows, bar speakers, is kept
        assert set(c.measures) == set(GROUP_MEASURES) - {"speaker"}
    # the smoke stand-ins are the same architectures, offline
    smoke = cli.load_config(CONFIGS / "ssl_large_librispeech.py", arg="smoke")
    assert [e for e in smoke.encoders if e != "logmel"] == [
        "random:wav2vec2-large", "random:hubert-large", "random:wavlm-large",
        "random:data2vec-audio-large"]


def test_overrides_reach_the_configs():
    c = cli.load_config(CONFIGS / "ssl_base_librispeech.py",
                        ["corpus=/data/ls/manifest.tsv", "speaker_domain=synthetic",
                         "probe.l2=(0.0,)"])
    assert c.corpus == "/data/ls/manifest.tsv" and c.speaker_domain == "synthetic"
    assert tuple(c.probe.l2) == (0.0,)


def test_prepare_librispeech_renames_splits_and_refuses_overlap():
    prep = load_module(ROOT / "experiments" / "prepare_librispeech.py")
    rows = {"train": [{"id": "a", "split": "train_clean100"}, {"id": "b", "split": "train_clean100"}],
            "dev": [{"id": "c", "split": "dev_clean"}], "test": [{"id": "d", "split": "test_clean"}]}
    out = prep.rename_splits(rows)
    assert [(r["id"], r["split"]) for r in out] == [("a", "train"), ("b", "train"), ("c", "dev"),
                                                    ("d", "test")]
    assert rows["train"][0]["split"] == "train_clean100"  # inputs untouched
    with pytest.raises(ValueError, match="'c' is in both the dev and the test split"):
        prep.rename_splits({"dev": [{"id": "c"}], "test": [{"id": "c"}]})


def test_tiny_checkpoints_keep_the_family_switches(tiny_checkpoints):
    for style, paths in tiny_checkpoints.items():
        for path in paths:
            cfg = json.loads((Path(path) / "config.json").read_text())
            assert (Path(path) / "model.safetensors").is_file()
            assert cfg["hidden_size"] == 32 and cfg["num_hidden_layers"] == 2
            assert math.prod(cfg["conv_stride"]) == 320  # 50 frames/s, as the real models
            pre_ln = cfg.get("do_stable_layer_norm", False)
            assert pre_ln == (style == "large" and cfg["model_type"] != "data2vec-audio"), path


# ------------------------------------------------------------------------------ smoke runs


def test_ssl_large_config_is_the_base_one_with_other_encoders():
    """The two LibriSpeech experiments differ in their encoders alone, so the base config's smoke
    run (the TPU-sweep notebook, test_colab.py, with a pre-LN large-style model among its
    encoders) is the large config's too. Fails when a setting of one drifts from the other's."""
    for arg in ("", "smoke"):
        base, large = (cli.load_config(CONFIGS / f"ssl_{size}_librispeech.py", arg=arg).to_dict()
                       for size in ("base", "large"))
        assert base.pop("encoders") != large.pop("encoders")
        assert base == large, arg


def test_whisper_smoke_run(tmp_path):
    """Whisper tiny.en (real weights) through the config's smoke run, every measure (speakers
    included); base and the baselines are left out to keep the check small."""
    encoders = ["whisper-tiny.en"]
    config = cli.load_config(CONFIGS / "whisper_bundled.py", arg="smoke")
    assert set(config.measures) == set(GROUP_MEASURES)
    run_smoke("whisper_bundled", tmp_path / "run", encoders, smoke_env())
    records = check_run(tmp_path / "run", encoders, config.measures)
    speakers = {tuple(r["extra"]["speakers"]) for r in records if r["measure"] == "speaker_mi"}
    assert speakers == {("awb", "kal", "ked", "rms", "slt")}  # synthetic voices only


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (Debian package ffmpeg)")
def test_more_voices_adds_chunked_recordings_and_leaves_the_base_set_alone(tmp_path, monkeypatch):
    """``experiments/pretrain_more_voices.py`` on a two-utterance base set, with one fake package
    file per voice: a 25 s prompt (cut in two chunks), a silent one (left out)."""
    import soundfile as sf
    from speechmi_jax.data import build_pretrain as bp
    more = load_module(ROOT / "experiments" / "pretrain_more_voices.py")
    base, sounds, docs = tmp_path / "base", tmp_path / "sounds", tmp_path / "doc"
    (base / "audio" / "s").mkdir(parents=True)
    (base / "LICENSES").mkdir()
    (base / "LICENSES" / "README.md").write_text("| package |\n")
    rows = [{c: "" for c in bp.COLUMNS} | {"id": f"s-{i}", "audio": f"audio/s/{i}.flac", "speaker": "s",
                                            "split": "train", "domain": "real", "source": "s"}
            for i in range(2)]
    for i in range(2):
        sf.write(base / "audio" / "s" / f"{i}.flac", np.zeros(16000, np.float32) + 0.1 * i, 16000)
    bp.manifest_lib.write_manifest(base / "manifest.tsv", rows, bp.COLUMNS)
    (base / "HASH").write_text(bp.content_hash(base) + "\n")
    before = {p: p.read_bytes() for p in base.rglob("*") if p.is_file()}
    rng = np.random.default_rng(0)
    files = {}
    for source, (package, suffix, *_) in more.VOICES.items():
        (docs / package).mkdir(parents=True)
        (docs / package / "copyright").write_text(f"{package} copyright\n")
        speech, silent = sounds / package / "long.wav", sounds / package / "silent.wav"
        speech.parent.mkdir(parents=True)
        sf.write(speech, 0.3 * rng.standard_normal(25 * 8000).astype(np.float32), 8000)
        sf.write(silent, np.zeros(8000, np.float32), 8000)
        files[package] = [speech, silent]
    monkeypatch.setattr(more, "SOUNDS", sounds)
    monkeypatch.setattr(more, "DOCS", docs)
    monkeypatch.setattr(more, "package_files", lambda package, suffix: files[package])
    out = tmp_path / "out"
    assert more.main(["--base", str(base), "--out", str(out)]) == 0
    assert {p: p.read_bytes() for p in base.rglob("*") if p.is_file()} == before  # hard links kept safe
    got = bp.manifest_lib.read_manifest(out / "manifest.tsv")
    assert [r["id"] for r in got[:2]] == ["s-0", "s-1"]
    added = got[2:]
    assert len(added) == 2 * len(more.VOICES)  # the 25 s prompt in two chunks each, the silent one left out
    assert all(r["channel"] == "telephone-8k" and r["domain"] == "real" for r in added)
    assert added[1]["id"].endswith("-0012s") and added[1]["origin"].endswith("@12.50s")
    durations = [sf.info(r["audio"]).duration for r in added[:2]]
    assert durations == pytest.approx([12.5, 12.5])
    assert all(Path(r["audio"]).is_relative_to(out) for r in got)
    assert (out / "HASH").read_text().strip() == bp.content_hash(out)
    assert "asterisk-prompt-es-co" in (out / "LICENSES" / "README.md").read_text()
    with pytest.raises(SystemExit, match="exists; expected a new folder"):
        more.main(["--base", str(base), "--out", str(out)])
