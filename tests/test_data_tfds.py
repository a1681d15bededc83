"""LibriSpeech through tensorflow-datasets + MFA TextGrids, on a dataset built here offline:
the real ``librispeech`` TFDS builder (features, transcript parsing, TFRecord writing and
reading), run over a local folder in LibriSpeech's layout (audio and phones from the bundled
corpus). Only FLAC decoding differs: soundfile instead of pydub (which needs ffmpeg).

Needs tensorflow-datasets and tensorflow (the builder reads and writes TFRecords through
TensorFlow); skipped where they are not installed (they are not test dependencies: ~1 GB)."""

import numpy as np
import pytest
import soundfile as sf

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from praatio import textgrid  # noqa: E402

from speechmi_jax.data.corpus import load_corpus  # noqa: E402


def _librispeech_folder(root, utts):
    """Writes utts in LibriSpeech's layout: LibriSpeech/<split>/<spk>/<chap>/<id>.flac +
    <spk>-<chap>.trans.txt; returns {librispeech id: bundled utterance}."""
    by_id = {}
    for k, u in enumerate(utts):
        spk, chap = 100 + sorted({v.speaker for v in utts}).index(u.speaker), 7
        uid = f"{spk}-{chap}-{k:04d}"
        d = root / "LibriSpeech" / "dev-clean" / str(spk) / str(chap)
        d.mkdir(parents=True, exist_ok=True)
        sf.write(d / f"{uid}.flac", u.audio, 16000, subtype="PCM_16")
        with open(d / f"{spk}-{chap}.trans.txt", "a") as f:
            f.write(f"{uid} {u.text.upper()}\n")
        by_id[uid] = u
    return by_id


def _write_mfa_textgrid(path, u):
    """A TextGrid as MFA writes it: 'words' and 'phones' tiers, upper-case ARPAbet, empty
    intervals for silence."""
    dur = u.duration_s
    phones = [(s, e, "" if p == "sil" else p.upper() + ("1" if p in "aa ae iy" else ""))
              for s, e, p in u.phones]
    tg = textgrid.Textgrid()
    tg.addTier(textgrid.IntervalTier("words", [(0.0, dur, u.text.lower())], 0.0, dur))
    tg.addTier(textgrid.IntervalTier("phones", [x for x in phones if x[2]], 0.0, dur))
    path.parent.mkdir(parents=True, exist_ok=True)
    tg.save(str(path), format="long_textgrid", includeBlankSpaces=True)


def prepared_librispeech(tmp_path, num_utterances=6, textgrids=None):
    """The real ``librispeech`` builder prepared offline in ``tmp_path / "tfds"`` over a
    ``dev_clean`` of bundled utterances -> (builder, {librispeech id: bundled utterance});
    with MFA TextGrids of every utterance in the folder ``textgrids`` if given."""
    from tensorflow_datasets.core import registered
    from tensorflow_datasets.datasets.librispeech import librispeech_dataset_builder as lb

    bundled = load_corpus("bundled")
    utts = [u for u in bundled if u.speaker in ("slt", "awb")][:num_utterances]
    by_id = _librispeech_folder(tmp_path / "src", utts)
    src = tmp_path / "src"

    # Not registered by name: several tests in one process (and tests/test_multihost.py) each
    # define it, and tfds refuses a second registration of one name.
    with registered.skip_registration():
        class LibrispeechLocal(lb.Builder):
            """The real builder, reading a local folder instead of downloading."""

            __module__ = lb.Builder.__module__  # the builder's README/checksums folder

            def _split_generators(self, dl_manager):
                return {"dev_clean": self._local_examples()}

            def _local_examples(self):
                # The builder's own transcript parsing; FLAC decoded with soundfile instead of
                # pydub (which needs ffmpeg): the Audio feature takes the int16 samples.
                for trans in sorted(src.glob("LibriSpeech/*/*/*/*.txt")):
                    for key, ex in lb._generate_librispeech_examples(str(trans)):
                        ex["speech"] = sf.read(ex["speech"], dtype="int16")[0]
                        yield key, ex

    builder = LibrispeechLocal(data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare()
    for uid in by_id if textgrids is not None else ():
        _write_mfa_textgrid(textgrids / uid.split("-")[0] / f"{uid}.TextGrid", by_id[uid])
    return builder, by_id


def test_tfds_librispeech_with_mfa_textgrids(tmp_path, caplog):
    builder, by_id = prepared_librispeech(tmp_path)
    grids = tmp_path / "mfa"
    ids = sorted(by_id)
    for uid in ids[:-1]:  # the last utterance has no alignment
        _write_mfa_textgrid(grids / uid.split("-")[0] / f"{uid}.TextGrid", by_id[uid])

    with pytest.raises(FileNotFoundError, match=f"no TextGrid for 1 of 6.*{ids[-1]}"):
        load_corpus("librispeech", builder=builder, split="dev_clean", textgrid_dir=grids,
                    cache_dir=tmp_path / "cache")
    c = load_corpus("librispeech", builder=builder, split="dev_clean", textgrid_dir=grids,
                    cache_dir=tmp_path / "cache", on_error="skip")
    assert c.skipped == [(ids[-1], f"{grids}: no TextGrid for {ids[-1]}")]
    assert sorted(u.id for u in c) == ids[:-1]
    for u in c:
        ref = by_id[u.id]
        assert u.split == "dev_clean" and u.speaker == u.id.split("-")[0]
        assert u.text == ref.text.upper() and u.metadata["chapter"] == "7"
        np.testing.assert_allclose(u.audio, ref.audio, atol=1.5 / 32768)
        assert [p for *_, p in u.phones] == [p for *_, p in ref.phones]
        np.testing.assert_allclose([x[:2] for x in u.phones], [x[:2] for x in ref.phones],
                                   atol=1e-6)
    # A second load reuses the FLAC copies.
    again = load_corpus("librispeech", builder=builder, split="dev_clean", textgrid_dir=grids,
                        cache_dir=tmp_path / "cache", on_error="skip")
    assert [u.id for u in again] == [u.id for u in c]
    with pytest.raises(KeyError, match="train_clean100"):
        load_corpus("librispeech", builder=builder, split="train_clean100",
                    textgrid_dir=grids, cache_dir=tmp_path / "cache")
