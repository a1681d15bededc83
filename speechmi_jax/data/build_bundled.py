"""Builds the bundled corpus from Debian packages, deterministically.

    python -m speechmi_jax.data.build_bundled --out speechmi_jax/data/bundled [--max-prompts N]

Design (parallel: every prompt is spoken by every speaker, so speaker and content are not
confounded; splits are disjoint by prompt):

* prompts: transcripts of the Asterisk core sounds (``asterisk-core-sounds-en``), keeping
  prompts without digits or bracketed non-speech whose words are all in pocketsphinx's
  CMUdict and whose recording lasts 1.2-3.0 s, then choosing ``--max-prompts`` of them
  greedily for phone-pair coverage per second of audio.
* speaker ``allison``: the real recordings (``asterisk-core-sounds-en-wav``, 8 kHz,
  CC-BY-SA-3.0), stored as FLAC at their native 8 kHz (the corpus resamples to 16 kHz with
  soxr at load time) and aligned at phone level with pocketsphinx's en-us model.
* speakers ``awb``, ``rms``, ``kal``: flite voices (``-psdur`` phone end times);
  ``ked``: festival ``ked_diphone``; ``slt``: festival ``cmu_us_slt_arctic_hts`` (32 kHz,
  resampled to 16 kHz). Synthesizer timings are exact; flite's kal pads the final pause
  ~0.12 s past the audio, which is clipped to the audio's end.

Metadata marks each speaker's ``domain`` (real/synthetic), ``channel`` (``telephone-8k``
for the band-limited recording, ``wideband-16k`` otherwise) and ``system``: both are
confounds for speaker probes. Needs the Debian packages flite festival festvox-kdlpc16k
festvox-us-slt-hts asterisk-core-sounds-en asterisk-core-sounds-en-wav, and pocketsphinx.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from speechmi_jax.data import alignments as align_lib
from speechmi_jax.data import audio as audio_lib
from speechmi_jax.data import manifest as manifest_lib
from speechmi_jax.data import phones as phones_lib

TRANSCRIPTS = "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
SOUNDS = "/usr/share/asterisk/sounds/en"
SAMPLE_RATE = 16000
MIN_S, MAX_S = 1.2, 3.0

# speaker -> (system, voice, domain, channel, license note)
SPEAKERS = {
    "allison": ("recording+pocketsphinx", "Allison Smith (asterisk-core-sounds-en-wav)",
                "real", "telephone-8k"),
    "awb": ("flite", "awb", "synthetic", "wideband-16k"),
    "rms": ("flite", "rms", "synthetic", "wideband-16k"),
    "kal": ("flite", "kal16", "synthetic", "wideband-16k"),
    "ked": ("festival", "ked_diphone", "synthetic", "wideband-16k"),
    "slt": ("festival", "cmu_us_slt_arctic_hts", "synthetic", "wideband-16k"),
}
SPLIT_FRACTIONS = (("train", 0.7), ("dev", 0.15), ("test", 0.15))
MANIFEST_COLUMNS = ["id", "audio", "speaker", "text", "split", "alignment", "prompt",
                    "domain", "channel", "system", "voice", "native_rate"]


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower().replace("-", " "))


def read_lexicon() -> dict[str, list[str]]:
    from pocketsphinx import get_model_path

    lex: dict[str, list[str]] = {}
    with open(os.path.join(get_model_path(), "en-us", "cmudict-en-us.dict"),
              encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if parts and "(" not in parts[0]:
                lex[parts[0]] = [p.lower() for p in parts[1:]]
    return lex


def candidate_prompts(lexicon) -> list[tuple[str, str, float]]:
    """(key, text, seconds, sound file) of the usable prompts, sorted by key; the key is the sound's name
    with ``/`` (sub-folders such as ``dictate/``) replaced by ``-``."""
    out = []
    with gzip.open(TRANSCRIPTS, "rt", encoding="utf-8") as f:
        for line in f:
            if ":" not in line or line.startswith(";"):
                continue
            name, text = (s.strip() for s in line.split(":", 1))
            path = os.path.join(SOUNDS, name + ".wav")
            if "[" in text or re.search(r"\d", text) or not os.path.exists(path):
                continue
            words = words_of(text)
            if not words or not all(w in lexicon for w in words):
                continue
            dur = audio_lib.audio_info(path).duration_s
            if MIN_S <= dur <= MAX_S:
                out.append((name.replace("/", "-"), text, dur, name + ".wav"))
    return sorted(out)


def choose_prompts(cands, lexicon, max_prompts: int):
    """Greedy choice maximising new phone pairs (and phones) per second; deterministic."""
    covered: set = set()
    chosen = []
    pool = list(cands)
    while pool and len(chosen) < max_prompts:
        def gain(c):
            ph = ["sil"] + [p for w in words_of(c[1]) for p in lexicon[w]] + ["sil"]
            units = set(zip(ph, ph[1:])) | set(ph)
            return (len(units - covered) / c[2], c[0])
        best = max(pool, key=gain)
        words = words_of(best[1])
        ph = ["sil"] + [p for w in words for p in lexicon[w]] + ["sil"]
        covered |= set(zip(ph, ph[1:])) | set(ph)
        chosen.append(best)
        pool.remove(best)
    return sorted(chosen)


def assign_splits(names: list[str]) -> dict[str, str]:
    """Disjoint-by-prompt splits from a fixed-seed permutation of the sorted prompt names."""
    order = np.random.RandomState(0).permutation(len(names))
    out, start = {}, 0
    for i, (split, frac) in enumerate(SPLIT_FRACTIONS):
        n = len(names) - start if i == len(SPLIT_FRACTIONS) - 1 else int(round(frac * len(names)))
        for j in order[start:start + n]:
            out[sorted(names)[j]] = split
        start += n
    return out


def parse_flite_psdur(stdout: str, source: str) -> list[tuple[float, float, str]]:
    """flite ``-psdur`` prints ``phone:end_time`` pairs -> (start, end, phone) segments."""
    segs, prev = [], 0.0
    for tok in stdout.split():
        phone, _, end = tok.rpartition(":")
        if not phone:
            raise ValueError(f"{source}: unexpected flite -psdur token {tok!r}")
        segs.append((prev, float(end), phone))
        prev = float(end)
    return segs


def parse_festival_segs(text: str, source: str) -> list[tuple[float, float, str]]:
    """festival ``utt.save.segs``: a ``#`` line, then ``end_time 100 phone`` lines."""
    body = text.split("#", 1)[1] if "#" in text else text
    segs, prev = [], 0.0
    for line in body.splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise ValueError(f"{source}: unexpected festival segs line {line!r}")
        segs.append((prev, float(parts[0]), parts[2]))
        prev = float(parts[0])
    return segs


def synth_flite(voice: str, text: str, wav_path: str, options: tuple[str, ...] = ()):
    """flite with phone timings; ``options`` are extra flite arguments (e.g. ``--setf``)."""
    res = subprocess.run(["flite", "-voice", voice, *options, "-psdur", "-t", text,
                          "-o", wav_path], capture_output=True, text=True, check=True)
    return parse_flite_psdur(res.stdout, f"flite {voice} {text!r}")


def synth_festival(voice: str, items: list[tuple[str, str]], workdir: str,
                   setup: dict[str, str] | None = None):
    """Synthesizes ``[(key, text)]`` in one festival run -> {key: (wav path, segments)};
    ``setup[key]`` (optional) is Scheme run before that item (e.g. a ``Parameter.set``)."""
    lines = [f"(voice_{voice})"]
    for key, text in items:
        if setup and key in setup:
            lines.append(setup[key])
        esc = text.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'(set! utt (utt.synth (eval (list \'Utterance \'Text "{esc}"))))')
        lines.append(f'(utt.save.wave utt "{workdir}/{key}.wav" \'riff)')
        lines.append(f'(utt.save.segs utt "{workdir}/{key}.segs")')
    script = os.path.join(workdir, f"{voice}.scm")
    Path(script).write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = subprocess.run(["festival", "-b", script], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"festival failed on {script} (exit {res.returncode}): "
                           f"{res.stderr[-2000:]}{res.stdout[-500:]}")
    out = {}
    for key, _ in items:
        segs_path = f"{workdir}/{key}.segs"
        out[key] = (f"{workdir}/{key}.wav",
                    parse_festival_segs(Path(segs_path).read_text(), segs_path))
    return out


def finish_segments(segs, duration_s: float, source: str) -> list[tuple[float, float, str]]:
    """A synthesizer's or aligner's raw segments -> phone-set segments covering the audio."""
    segs = align_lib.normalize_segments(segs, source=source)
    # flite's kal voices pad the final pause past the audio: clip to the audio.
    segs = align_lib.fit_to_duration(segs, duration_s, source=source, tolerance_s=0.2)
    # festival's waves run ~25 ms past the final pause's end: extend that pause.
    if segs[-1][2] == phones_lib.SILENCE and segs[-1][1] < duration_s:
        segs[-1] = (segs[-1][0], duration_s, segs[-1][2])
    return segs


def align_pocketsphinx(audio16: np.ndarray, text: str, source: str):
    """Phone-level forced alignment with pocketsphinx's en-us model (10 ms frames)."""
    from pocketsphinx import Decoder

    pcm = (np.clip(audio16, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    dec = Decoder(samprate=SAMPLE_RATE, bestpath=False, loglevel="FATAL")
    dec.set_align_text(" ".join(words_of(text)))
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    dec.set_alignment()
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    al = dec.get_alignment()
    if al is None:
        raise RuntimeError(f"{source}: pocketsphinx found no alignment for {text!r}")
    frame_s = 1.0 / 100.0
    segs = []
    for word in al:
        for ph in word:
            segs.append((ph.start * frame_s, (ph.start + ph.duration) * frame_s, ph.name))
    return segs


def write_flac(path: Path, audio: np.ndarray, rate: int) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate, format="FLAC", subtype="PCM_16",
             compression_level=1.0)


def build(out: str | os.PathLike, max_prompts: int = 110, speakers=tuple(SPEAKERS)) -> dict:
    """Builds the corpus into ``out`` (replacing its audio, manifest and alignments)."""
    import soundfile as sf

    out = Path(out)
    lexicon = read_lexicon()
    prompts = choose_prompts(candidate_prompts(lexicon), lexicon, max_prompts)
    sound_file = {p[0]: p[3] for p in prompts}
    splits = assign_splits([p[0] for p in prompts])
    if (out / "audio").exists():
        shutil.rmtree(out / "audio")
    out.mkdir(parents=True, exist_ok=True)
    rows, table = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        fest = {}
        for spk in speakers:
            system, voice = SPEAKERS[spk][:2]
            if system == "festival":
                os.makedirs(os.path.join(tmp, spk))
                fest[spk] = synth_festival(voice, [(p[0], p[1]) for p in prompts],
                                           os.path.join(tmp, spk))
        for name, text, _, _ in prompts:
            for spk in speakers:
                system, voice, domain, channel = SPEAKERS[spk]
                source = f"{spk}/{name}"
                if spk == "allison":
                    src = os.path.join(SOUNDS, sound_file[name])
                    wav, native = audio_lib.read_audio(src, SAMPLE_RATE)
                    segs = align_pocketsphinx(wav, text, source)
                    store, store_rate = sf.read(src, dtype="float32")[0], native
                elif system == "flite":
                    wav_path = os.path.join(tmp, f"{spk}-{name}.wav")
                    segs = synth_flite(voice, text, wav_path)
                    store, store_rate = audio_lib.read_audio(wav_path, SAMPLE_RATE)[0], SAMPLE_RATE
                else:
                    wav_path, segs = fest[spk][name]
                    store, store_rate = audio_lib.read_audio(wav_path, SAMPLE_RATE)[0], SAMPLE_RATE
                segs = finish_segments(segs, len(store) / store_rate, source)
                utt_id = f"{spk}-{name}"
                rel = Path("audio") / spk / f"{name}.flac"
                write_flac(out / rel, store, store_rate)
                table[utt_id] = segs
                rows.append(dict(id=utt_id, audio=str(rel), speaker=spk, text=text,
                                 split=splits[name], alignment="alignments.tsv", prompt=name,
                                 domain=domain, channel=channel, system=system, voice=voice,
                                 native_rate=store_rate))
    align_lib.write_tsv(out / "alignments.tsv", table)
    manifest_lib.write_manifest(out / "manifest.tsv", rows, MANIFEST_COLUMNS)
    total_s = float(sum(sf.info(str(out / r["audio"])).duration for r in rows))
    meta = {
        "name": "speechmi bundled parallel corpus",
        "sample_rate": SAMPLE_RATE,
        "phone_set": list(phones_lib.PHONE_SET),
        "num_prompts": len(prompts),
        "num_utterances": len(rows),
        "total_duration_s": round(total_s, 2),
        "speakers": {s: dict(zip(("system", "voice", "domain", "channel"), SPEAKERS[s]))
                     for s in speakers},
        "splits": {s: sorted(n for n in splits if splits[n] == s) for s, _ in SPLIT_FRACTIONS},
        "notes": [
            "Splits are disjoint by prompt: every prompt's utterances share one split.",
            "allison's audio is stored at its native 8 kHz (telephone band) and resampled to "
            "16 kHz with soxr at load time; channel and domain (real vs synthetic) are "
            "confounded with that speaker, so speaker probes partly detect them.",
            "allison's phones come from pocketsphinx forced alignment (10 ms frames); the "
            "synthetic speakers' phones are the synthesizers' own timings.",
        ],
        "build_command": "python -m speechmi_jax.data.build_bundled --out "
                         "speechmi_jax/data/bundled --max-prompts " + str(max_prompts),
    }
    (out / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n",
                                       encoding="utf-8")
    return meta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-prompts", type=int, default=110)
    p.add_argument("--speakers", default=",".join(SPEAKERS),
                   help="comma-separated subset of " + ",".join(SPEAKERS))
    args = p.parse_args(argv)
    meta = build(args.out, args.max_prompts, tuple(args.speakers.split(",")))
    print(f"{meta['num_utterances']} utterances, {meta['num_prompts']} prompts, "
          f"{meta['total_duration_s'] / 60:.1f} min -> {args.out}")


if __name__ == "__main__":
    main()
