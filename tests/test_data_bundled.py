"""The bundled corpus: design (parallel, prompt-disjoint splits), labels that cover the audio
and are really aligned (vowel/silence energy contrast that a 120 ms shift destroys), and the
builder run on a couple of prompts."""

import json
import shutil

import numpy as np
import pytest

from speechmi_jax import frames
from speechmi_jax.data import phones
from speechmi_jax.data.corpus import BUNDLED_DIR, load_corpus


@pytest.fixture(scope="module")
def corpus():
    return load_corpus("bundled")


def test_parallel_design_and_splits(corpus):
    assert len(corpus.speakers) >= 5
    prompts = {}
    for u in corpus:
        prompts.setdefault(u.metadata["prompt"], []).append(u)
    assert len(prompts) >= 100
    for p, us in prompts.items():
        assert sorted(u.speaker for u in us) == corpus.speakers, p  # every speaker says it
        assert len({u.split for u in us}) == 1, p  # disjoint by prompt
        assert len({u.text for u in us}) == 1, p
    assert corpus.splits == ["dev", "test", "train"]
    for s in corpus.splits:
        assert corpus.split(s).speakers == corpus.speakers
    assert len(corpus) == len(prompts) * len(corpus.speakers)
    ids = [u.id for u in corpus]
    assert len(set(ids)) == len(ids)


def test_metadata_marks_domain_and_channel(corpus):
    meta = corpus.metadata
    assert meta["speakers"]["allison"]["domain"] == "real"
    assert meta["speakers"]["allison"]["channel"] == "telephone-8k"
    for u in corpus:
        assert u.metadata["domain"] == ("real" if u.speaker == "allison" else "synthetic")
        assert u.native_rate == (8000 if u.speaker == "allison" else 16000)
        assert u.sample_rate == 16000
    assert meta["num_utterances"] == len(corpus)
    assert abs(meta["total_duration_s"] - corpus.total_duration_s) < 1.0
    assert 15 * 60 < corpus.total_duration_s < 30 * 60


def test_domain_and_eval_domain_select_the_real_speaker(corpus):
    real = load_corpus("bundled", domain="real")
    assert {u.speaker for u in real} == {"allison"}
    assert [u.id for u in real] == [u.id for u in corpus if u.speaker == "allison"]
    transfer = load_corpus("bundled", eval_domain="real")
    assert transfer.split("train").utterances == corpus.split("train").utterances
    for split in ("dev", "test"):
        assert [u.id for u in transfer.split(split)] == [u.id for u in real.split(split)]
        assert transfer.split(split).utterances
    assert transfer.fingerprint() not in (corpus.fingerprint(), real.fingerprint())
    with pytest.raises(ValueError, match="domain 'studio'.*real.*synthetic"):
        load_corpus("bundled", eval_domain="studio")
    with pytest.raises(ValueError, match="not both"):
        load_corpus("bundled", domain="real", eval_domain="real")


def test_size_and_license():
    total = sum(p.stat().st_size for p in BUNDLED_DIR.rglob("*") if p.is_file())
    assert total <= 25 * 2**20, total
    text = (BUNDLED_DIR / "LICENSE.md").read_text()
    assert "CC-BY-SA-3.0" in text and "Allison Smith" in text


def test_labels_cover_the_audio(corpus):
    for u in corpus:
        segs = u.phones
        assert all(p in phones.PHONE_TO_ID for _, _, p in segs)
        starts = np.array([s for s, _, _ in segs])
        ends = np.array([e for _, e, _ in segs])
        assert starts[0] <= 0.02, u.id
        assert abs(ends[-1] - u.duration_s) <= 0.02, (u.id, ends[-1], u.duration_s)
        assert np.all(ends > starts), u.id
        assert np.all(starts[1:] >= ends[:-1] - 1e-6), u.id  # ordered, no overlap
        assert np.max(starts[1:] - ends[:-1], initial=0.0) <= 1e-3, u.id  # no holes


def _vowel_minus_silence_db(utts, shift_s):
    """Mean log-energy (10 ms frames) of vowel frames minus that of silence frames."""
    vowel = np.array([p in phones.VOWELS for p in phones.PHONE_SET])
    sil = phones.PHONE_TO_ID[phones.SILENCE]
    ev, es = [], []
    for u in utts:
        a = u.audio
        n = len(a) // 160
        e = 10 * np.log10((a[:n * 160].reshape(n, 160) ** 2).mean(1) + 1e-10)
        segs = [(s + shift_s, t + shift_s, p) for s, t, p in u.phones]
        lab = frames.segments_to_frame_labels(segs, n, 100.0, 0.005, phones.PHONE_TO_ID)
        ev.append(e[(lab >= 0) & vowel[np.maximum(lab, 0)]])
        es.append(e[lab == sil])
    ev, es = np.concatenate(ev), np.concatenate(es)
    assert len(ev) > 500 and len(es) > 200
    return ev.mean() - es.mean()


@pytest.mark.parametrize("speaker", ["allison", "awb", "rms", "kal", "ked", "slt"])
def test_alignment_energy_contrast(corpus, speaker):
    # Measured on 40 utterances per speaker: 41-55 dB aligned, 12-30 dB shifted by
    # +-120 ms (allison is the pocketsphinx-aligned real speaker).
    utts = [u for u in corpus if u.speaker == speaker][:30]
    aligned = _vowel_minus_silence_db(utts, 0.0)
    assert aligned > 35.0, aligned
    for shift in (0.12, -0.12):
        shifted = _vowel_minus_silence_db(utts, shift)
        assert aligned - shifted > 15.0, (shift, shifted, aligned)
    # The contrast peaks at (or within 20 ms of) the labels' own timing.
    shifts = np.arange(-0.06, 0.0601, 0.02)
    scores = [_vowel_minus_silence_db(utts, s) for s in shifts]
    assert abs(shifts[int(np.argmax(scores))]) <= 0.02 + 1e-9, dict(zip(shifts.round(2), scores))


needs_tools = pytest.mark.skipif(
    not (shutil.which("flite") and shutil.which("festival")
         and (BUNDLED_DIR.parent / "bundled").exists()
         and __import__("os").path.exists("/usr/share/asterisk/sounds/en/activated.wav")),
    reason="needs the Debian packages flite, festival, festvox-*, asterisk-core-sounds-en*")


@needs_tools
def test_builder_on_two_prompts_is_deterministic_and_loads(tmp_path):
    pytest.importorskip("pocketsphinx")
    from speechmi_jax.data import build_bundled
    from speechmi_jax.data.corpus import corpus_from_manifest

    meta = build_bundled.build(tmp_path / "a", max_prompts=2)
    build_bundled.build(tmp_path / "b", max_prompts=2)
    for name in ("manifest.tsv", "alignments.tsv", "metadata.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for f in sorted((tmp_path / "a" / "audio").rglob("*.flac")):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()
    assert meta["num_prompts"] == 2 and meta["num_utterances"] == 2 * len(build_bundled.SPEAKERS)
    c = corpus_from_manifest(tmp_path / "a" / "manifest.tsv")
    assert len(c) == 12 and len(c.speakers) == 6
    for u in c:
        assert abs(u.phones[-1][1] - u.duration_s) <= 0.02, u.id
        assert u.phones[0][0] <= 0.02
    # Every voice's phone inventory for a prompt overlaps the aligner's (CMUdict) one by more
    # than half (the synthesizers' lexicons differ in details such as reduced vowels).
    by_prompt = {}
    for u in c:
        by_prompt.setdefault(u.metadata["prompt"], {})[u.speaker] = [
            p for _, _, p in u.phones if p != phones.SILENCE]
    for prompt, seqs in by_prompt.items():
        ref = seqs["allison"]
        for spk, seq in seqs.items():
            common = len(set(ref) & set(seq)) / len(set(ref) | set(seq))
            assert common > 0.5, (prompt, spk, ref, seq)
    bundled = json.loads((BUNDLED_DIR / "metadata.json").read_text())
    assert bundled["phone_set"] == meta["phone_set"] == list(phones.PHONE_SET)
