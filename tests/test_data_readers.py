"""Alignment formats (written here in each tool's real format), the phone mapping, manifests,
and bad input: each bad item raises an error naming its file, or is skipped and reported."""

import logging

import numpy as np
import pytest
import soundfile as sf

from speechmi_jax.data import alignments as al
from speechmi_jax.data import phones
from speechmi_jax.data.corpus import load_corpus

# A Montreal Forced Aligner TextGrid (long text format, "words" and "phones" tiers, empty
# intervals for pauses, stress-marked ARPAbet), as MFA 2/3 writes it.
MFA_TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 1.2
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 1.2
        intervals: size = 3
        intervals [1]:
            xmin = 0
            xmax = 0.15
            text = ""
        intervals [2]:
            xmin = 0.15
            xmax = 0.62
            text = "hello"
        intervals [3]:
            xmin = 0.62
            xmax = 1.2
            text = ""
    item [2]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 1.2
        intervals: size = 6
        intervals [1]:
            xmin = 0
            xmax = 0.15
            text = ""
        intervals [2]:
            xmin = 0.15
            xmax = 0.23
            text = "HH"
        intervals [3]:
            xmin = 0.23
            xmax = 0.31
            text = "AH0"
        intervals [4]:
            xmin = 0.31
            xmax = 0.42
            text = "L"
        intervals [5]:
            xmin = 0.42
            xmax = 0.62
            text = "OW1"
        intervals [6]:
            xmin = 0.62
            xmax = 1.2
            text = "sil"
'''

HELLO = [(0.0, 0.15, "sil"), (0.15, 0.23, "hh"), (0.23, 0.31, "ah"), (0.31, 0.42, "l"),
         (0.42, 0.62, "ow"), (0.62, 1.2, "sil")]


def _close(a, b):
    assert [p for *_, p in a] == [p for *_, p in b]
    np.testing.assert_allclose([x[:2] for x in a], [x[:2] for x in b], atol=1e-6)


def test_phone_mapping():
    assert phones.normalize_phone("AH0") == "ah"
    assert phones.normalize_phone("ER1") == "er"
    assert phones.normalize_phone("pau") == "sil"
    assert phones.normalize_phone("") == "sil"
    assert phones.normalize_phone("tcl") == "sil"  # TIMIT closure (Lee & Hon)
    assert phones.normalize_phone("ax") == "ah"
    assert phones.normalize_phone("axr") == "er"
    assert phones.normalize_phone("ix") == "ih"
    assert phones.normalize_phone("en") == "n"
    assert phones.normalize_phone("hv") == "hh"
    assert phones.normalize_phone("dx") == "t"
    assert phones.normalize_phone("q") is None and phones.normalize_phone("spn") is None
    assert len(phones.PHONE_SET) == 40 and phones.PHONE_SET[-1] == "sil"
    with pytest.raises(phones.UnknownPhoneError, match="x.TextGrid.*'xx'"):
        phones.normalize_phone("xx", source="x.TextGrid")


def test_all_timit61_symbols_map():
    timit61 = ("aa ae ah ao aw ax ax-h axr ay b bcl ch d dcl dh dx eh el em en eng epi er ey f "
               "g gcl h# hh hv ih ix iy jh k kcl l m n ng nx ow oy p pau pcl q r s sh t tcl "
               "th uh uw ux v w y z zh").split()
    assert len(timit61) == 61
    mapped = {phones.normalize_phone(p) for p in timit61} - {None}
    assert mapped == set(phones.PHONE_SET)


def test_textgrid_mfa(tmp_path):
    p = tmp_path / "utt1.TextGrid"
    p.write_text(MFA_TEXTGRID)
    _close(al.read_alignment(p), HELLO)
    with pytest.raises(al.AlignmentError, match="utt1.TextGrid.*tier"):
        al.read_textgrid(p, tier="syllables")


def test_textgrid_speaker_prefixed_tiers(tmp_path):
    p = tmp_path / "u.TextGrid"
    p.write_text(MFA_TEXTGRID.replace('name = "phones"', 'name = "spk1 - phones"')
                 .replace('name = "words"', 'name = "spk1 - words"'))
    _close(al.read_alignment(p), HELLO)


def test_ctm(tmp_path):
    p = tmp_path / "align.ctm"
    p.write_text(";; phone CTM\n"
                 "utt1 1 0.00 0.15 sil\nutt1 1 0.15 0.08 HH\nutt1 1 0.23 0.08 AH0 0.98\n"
                 "utt1 1 0.31 0.11 L\nutt1 1 0.42 0.20 OW1\nutt1 1 0.62 0.58 sil\n"
                 "utt2 1 0.00 0.50 sil\nutt2 1 0.50 0.30 IY1\n")
    _close(al.read_alignment(p, utt_id="utt1"), HELLO)
    assert al.read_alignment(p, utt_id="utt2")[1] == (0.5, 0.8, "iy")
    with pytest.raises(al.AlignmentError, match="align.ctm.*utt3"):
        al.read_alignment(p, utt_id="utt3")


def test_timit_phn(tmp_path):
    p = tmp_path / "SA1.PHN"
    p.write_text("0 2400 h#\n2400 3680 hh\n3680 4960 ax\n4960 6720 l\n6720 9920 ow\n"
                 "9920 10400 q\n10400 19200 pau\n")
    got = al.read_alignment(p, fmt="phn", sample_rate=16000)
    want = HELLO[:5] + [(0.65, 1.2, "sil")]  # q (glottal stop) left unlabelled
    _close(got, want)


def test_tsv(tmp_path):
    p = tmp_path / "a.tsv"
    p.write_text("start_s\tend_s\tphone\n" + "".join(f"{s}\t{e}\t{ph}\n" for s, e, ph in HELLO))
    _close(al.read_alignment(p), HELLO)
    q = tmp_path / "many.tsv"
    al.write_tsv(q, {"u1": HELLO, "u2": HELLO[:2]})
    _close(al.read_alignment(q, utt_id="u1"), HELLO)
    _close(al.read_alignment(q, utt_id="u2"), HELLO[:2])


def test_overlap_and_unknown_phone_errors(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_text("0\t0.5\tsil\n0.4\t0.9\taa\n")
    with pytest.raises(al.AlignmentError, match="bad.tsv.*overlaps"):
        al.read_alignment(p)
    p.write_text("0\t0.5\tsil\n0.5\t0.9\tblah\n")
    with pytest.raises(phones.UnknownPhoneError, match="bad.tsv.*'blah'"):
        al.read_alignment(p)


def _tone(seconds, rate):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _corpus_dir(tmp_path):
    """A manifest corpus with one item of each kind, good and bad."""
    d = tmp_path / "c"
    (d / "wav").mkdir(parents=True)
    sf.write(d / "wav" / "good.wav", _tone(1.2, 16000), 16000)
    sf.write(d / "wav" / "rate22k.flac", _tone(1.2, 22050), 22050)
    sf.write(d / "wav" / "empty.wav", np.zeros(0, np.float32), 16000)
    (d / "wav" / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage" * 3)
    (d / "good.TextGrid").write_text(MFA_TEXTGRID)
    (d / "long.tsv").write_text("0\t0.5\tsil\n0.5\t1.6\taa\n")
    (d / "unknown.tsv").write_text("0\t0.5\tsil\n0.5\t1.1\tzz\n")
    rows = [("good", "wav/good.wav", "a", "good.TextGrid", "train"),
            ("rate22k", "wav/rate22k.flac", "b", "good.TextGrid", "test"),
            ("empty", "wav/empty.wav", "a", "", "train"),
            ("corrupt", "wav/corrupt.wav", "a", "", "train"),
            ("past_end", "wav/good.wav", "b", "long.tsv", "train"),
            ("unknown", "wav/good.wav", "b", "unknown.tsv", "train")]
    (d / "m.tsv").write_text("id\taudio\tspeaker\talignment\tsplit\tdomain\n" + "".join(
        "\t".join(r) + "\treal\n" for r in rows))
    return d


def test_manifest_bad_items_raise_naming_the_file(tmp_path):
    d = _corpus_dir(tmp_path)
    for bad, pattern in [("empty", "empty.wav.*empty"), ("corrupt", "corrupt.wav.*unreadable"),
                         ("past_end", "long.tsv.*past the end"),
                         ("unknown", "unknown.tsv.*'zz'")]:
        lines = (d / "m.tsv").read_text().splitlines()
        keep = [lines[0]] + [l for l in lines[1:] if l.startswith(bad + "\t")]
        (d / f"only_{bad}.tsv").write_text("\n".join(keep) + "\n")
        with pytest.raises(ValueError, match=pattern):
            load_corpus(d / f"only_{bad}.tsv")


def test_manifest_skip_reports_every_item(tmp_path, caplog):
    d = _corpus_dir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="speechmi_jax.data"):
        c = load_corpus(d / "m.tsv", on_error="skip")
    assert [u.id for u in c] == ["good", "rate22k"]
    assert [s[0] for s in c.skipped] == ["empty", "corrupt", "past_end", "unknown"]
    assert "empty.wav" in c.skipped[0][1] and "corrupt.wav" in c.skipped[1][1]
    assert "long.tsv" in c.skipped[2][1] and "unknown.tsv" in c.skipped[3][1]
    logged = caplog.text
    for item in ("empty", "corrupt", "past_end", "unknown"):
        assert f"skipped utterance {item}" in logged
    # The 22.05 kHz file is resampled (and said so) to exactly 1.2 s at 16 kHz.
    assert "22050 Hz is resampled to 16000 Hz" in logged
    u = c[1]
    assert u.resampled and u.native_rate == 22050 and u.num_samples == 19200
    audio = u.audio
    assert audio.dtype == np.float32 and audio.shape == (19200,)
    spec = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spec) * 16000 / len(audio) - 220) < 2  # the tone survives
    g = c[0]
    _close(g.phones, HELLO)
    assert g.metadata == {"domain": "real"} and g.split == "train" and g.speaker == "a"
    assert c.split("test").utterances == [u]
    with pytest.raises(KeyError, match="dev"):
        c.split("dev")


def test_json_manifest(tmp_path):
    d = _corpus_dir(tmp_path)
    (d / "m.jsonl").write_text('{"audio": "wav/good.wav", "speaker": "a", '
                               '"alignment": "good.TextGrid", "text": "hello"}\n')
    c = load_corpus(d / "m.jsonl")
    assert c[0].id == "good" and c[0].text == "hello" and c[0].split == "unsplit"
    with pytest.raises(ValueError, match="m2.json.*speaker"):
        (d / "m2.json").write_text('[{"audio": "wav/good.wav"}]')
        load_corpus(d / "m2.json")


def test_verify_audio_catches_corrupt_data(tmp_path):
    d = tmp_path
    sf.write(d / "ok.wav", _tone(1.0, 16000), 16000)
    sf.write(d / "bad.flac", _tone(1.0, 16000), 16000)
    data = bytearray((d / "bad.flac").read_bytes())
    data[200:] = bytes(len(data) - 200)  # valid header, destroyed frames
    (d / "bad.flac").write_bytes(bytes(data))
    (d / "m.tsv").write_text("audio\tspeaker\nok.wav\ta\nbad.flac\ta\n")
    c = load_corpus(d / "m.tsv", verify_audio=True, on_error="skip")
    assert [u.id for u in c] == ["ok"] and c.skipped[0][0] == "bad"
    assert "bad.flac" in c.skipped[0][1]


def _shared_alignment_corpus(d, fmt, n=6, bad="u2"):
    """n utterances of one audio file, all aligned in one CTM or 4-column TSV file; utterance
    ``bad`` holds an unknown phone symbol."""
    d.mkdir(parents=True, exist_ok=True)
    sf.write(d / "tone.wav", _tone(1.2, 16000), 16000)
    table = {f"u{i}": [(s, e, "zz" if f"u{i}" == bad and p == "l" else p) for s, e, p in HELLO]
             for i in range(n)}
    if fmt == "tsv":
        al.write_tsv(d / "all.tsv", table)
    else:
        (d / "all.ctm").write_text("".join(f"{u} 1 {s:.2f} {e - s:.2f} {p}\n"
                                           for u, segs in table.items() for s, e, p in segs))
    (d / "m.tsv").write_text("id\taudio\tspeaker\talignment\n" + "".join(
        f"{u}\ttone.wav\ts{i % 2}\tall.{fmt}\n" for i, u in enumerate(table)))
    return d / "m.tsv"


@pytest.mark.parametrize("fmt", ["tsv", "ctm"])
def test_skip_drops_only_the_bad_utterance_of_a_shared_alignment_file(tmp_path, fmt):
    manifest = _shared_alignment_corpus(tmp_path / fmt, fmt)
    c = load_corpus(manifest, on_error="skip")
    assert [u.id for u in c] == ["u0", "u1", "u3", "u4", "u5"]
    assert [s[0] for s in c.skipped] == ["u2"]
    assert f"all.{fmt} (u2)" in c.skipped[0][1] and "'zz'" in c.skipped[0][1]
    _close(c[2].phones, HELLO)
    # Raise mode names the file, the utterance and the symbol.
    with pytest.raises(phones.UnknownPhoneError, match=rf"all\.{fmt} \(u2\).*'zz'"):
        load_corpus(manifest)
    # A line that names its utterance but cannot be parsed costs that utterance only.
    if fmt == "tsv":
        text = (tmp_path / fmt / "all.tsv").read_text().replace("u4\t0.1500", "u4\tx0.15")
        (tmp_path / fmt / "all.tsv").write_text(text)
        c = load_corpus(manifest, on_error="skip")
        assert [s[0] for s in c.skipped] == ["u2", "u4"] and "not numbers" in c.skipped[1][1]


def test_shared_alignment_file_is_read_once(tmp_path, monkeypatch):
    """Every row of the manifest names the same file: it is parsed once, not once per row
    (which made loading quadratic in the corpus), also when one utterance in it is bad."""
    manifest = _shared_alignment_corpus(tmp_path, "tsv", n=40)
    reads = []
    original = al.read_tsv_table
    monkeypatch.setattr(al, "read_tsv_table", lambda *a, **k: reads.append(a) or original(*a, **k))
    c = load_corpus(manifest, on_error="skip")
    assert len(c) == 39 and len(reads) == 1


def _decode_faults(d):
    """Files whose headers read fine but whose samples are unusable."""
    d.mkdir(parents=True, exist_ok=True)
    tone = _tone(1.0, 16000)
    sf.write(d / "good.wav", tone, 16000)
    sf.write(d / "nan.wav", np.where(np.arange(tone.size) == 500, np.nan, tone), 16000,
             subtype="FLOAT")
    sf.write(d / "stereo.wav", np.stack([tone, tone], axis=1), 16000)
    for name in ("cutf.flac", "cutw.wav"):
        sf.write(d / name, tone, 16000)
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: len(data) // 2])  # a copy cut short
    (d / "m.tsv").write_text("audio\tspeaker\n" + "".join(
        f"{n}\ta\n" for n in ("good.wav", "nan.wav", "stereo.wav", "cutf.flac", "cutw.wav")))
    return d / "m.tsv"


def test_skip_mode_catches_decode_time_faults(tmp_path):
    manifest = _decode_faults(tmp_path)
    c = load_corpus(manifest, on_error="skip")  # no verify_audio: skip mode decodes anyway
    assert [u.id for u in c] == ["good"]
    assert [s[0] for s in c.skipped] == ["nan", "stereo", "cutf", "cutw"]
    assert "nan.wav" in c.skipped[0][1] and "NaN" in c.skipped[0][1]
    assert "stereo.wav" in c.skipped[1][1] and "2 channels" in c.skipped[1][1]
    assert "cutf.flac" in c.skipped[2][1] and "truncated" in c.skipped[2][1]
    assert "cutw.wav" in c.skipped[3][1] and "truncated" in c.skipped[3][1]
    assert c[0].audio.shape == (16000,)


def test_truncated_wav_is_refused_at_load(tmp_path):
    manifest = _decode_faults(tmp_path)
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0], lines[-1]]) + "\n")
    with pytest.raises(ValueError, match=r"cutw\.wav: truncated: the WAV header declares 32000 "
                                         r"data bytes, the file holds"):
        load_corpus(manifest)  # raise mode, no verify_audio: the header check is free
