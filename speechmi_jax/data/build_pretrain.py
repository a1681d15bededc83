"""Builds the offline, unlabelled pretraining set from Debian packages, deterministically.

    python -m speechmi_jax.data.build_pretrain --out DIR --hours 3 [--seed 0]
    python -m speechmi_jax.data.build_pretrain --verify DIR

Same packages + ``--hours`` + ``--seed`` -> the same bytes and the same content hash (``HASH``:
sha256 over every file's path and sha256, ``build_time.json`` left out). Keep ``DIR`` outside
git; ``smi.load_corpus(DIR + "/manifest.tsv")`` reads it (splits ``train`` and ``dev``, ~2% of
the source recordings/texts, chosen by a hash of their name).

Sources (all 16 kHz mono 16-bit FLAC in ``DIR/audio/<source>/``):

* real recordings: the Asterisk core prompts in en, es, fr, it and ru from the wideband
  ``asterisk-core-sounds-*-g722`` packages (G.722, decoded to 16 kHz by ffmpeg), and the
  speech examples of ``codec2-examples`` (8 kHz telephone band, resampled to 16 kHz with
  soxr). Tones, silences, an empty file and codec2's concatenation of its other examples
  are left out; recordings over 20 s are cut into equal chunks. No phone alignments.
* synthetic English: verses of the King James Bible (``bible-kjv-text``, read with the
  ``bible`` program of ``bible-kjv``; 6-40 words) spoken by flite (awb, rms, slt, kal16) and
  festival (ked_diphone, kal_diphone, cmu_us_slt_arctic_hts), each voice its own verses.
  Each utterance draws a duration stretch in [0.85, 1.2] and (except the HTS voice, which
  ignores both) an f0 mean of the voice's own times [0.85, 1.2]. The synthesizers' exact
  phone timings are kept (``alignments.tsv``).

Budget: ``--hours`` is split over the sources by weight (each real source 2, each voice 1),
capped at what a source holds, the rest shared out again; a source takes items in its seeded
order until it reaches its share (so the total is at least ``--hours``).

Disjoint from the bundled corpus's dev and test splits: Asterisk recordings whose file name
is a dev/test prompt (in every language: the es prompts are the same speaker and the others
translate them) are left out, as are English recordings and verses whose normalised text
contains a dev/test prompt's text. The manifest marks each utterance's ``domain``
(real/synthetic), ``source``, ``language``, ``system``, ``voice`` and ``licence`` (the files in
``DIR/LICENSES/``, one per Debian package, with attribution and the package's copyright file).

Build time, measured on a 2-core machine shared with about 7 other jobs (so loaded; load
average 6-9 at the end of each build): the full set (``--hours 3``: 3.02 h, 1.80 h of it real,
3003 utterances, 207 MB) took 177-435 s in four builds; both rebuilds with unchanged code
reproduced the hash. The slice the test builds (``--hours 0.02``: 123 s of audio, 26
utterances) took 6 s.

Needs the Debian packages asterisk-core-sounds-{en,es,fr,it,ru}-g722, asterisk-core-sounds-en
(transcripts), codec2-examples, bible-kjv, flite, festival, festvox-kallpc16k,
festvox-kdlpc16k, festvox-us-slt-hts and ffmpeg.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from speechmi_jax.data import alignments as align_lib
from speechmi_jax.data import audio as audio_lib
from speechmi_jax.data import build_bundled as bb
from speechmi_jax.data import manifest as manifest_lib
from speechmi_jax.data.corpus import BUNDLED_DIR

SAMPLE_RATE = 16000
MAX_CHUNK_S = 20.0
MIN_S = 0.3  # shorter recordings are left out
DEV_EVERY = 50  # ~2% of source items (by a hash of their name) go to the dev split
STRETCH = (0.85, 1.2)
F0_SCALE = (0.85, 1.2)
VERSE_WORDS = (6, 40)
ASTERISK_ROOT = "/usr/share/asterisk/sounds"
CODEC2_FILES = ("/usr/share/codec2/wav/*.wav", "/usr/share/codec2/raw/speech_orig_16k.wav")
# all.wav concatenates the other examples; wia_16kHz.wav is a 1 s clip of unclear content.
CODEC2_NOT_SPEECH = ("all.wav", "wia_16kHz.wav")
# Asterisk sounds that are not speech (tones, a monkey recording, the silence/ folder).
ASTERISK_NOT_SPEECH = ("ascending-2tone", "beep", "beeperr", "descending-2tone", "tt-monkeys")
HASH_EXCLUDED = ("HASH", "build_time.json")
COLUMNS = ["id", "audio", "speaker", "text", "split", "alignment", "domain", "source",
           "language", "system", "voice", "licence", "channel", "source_rate", "origin",
           "stretch", "f0_mean_hz"]

_ALLISON = ("Recorded by Allison Smith (theivrvoice.com); financial contributions by Digium, "
            "Inc. Copyright 2003-2010 Allison Smith.")
# language -> (sounds folder, speaker, licence, attribution)
ASTERISK = {
    "en": ("en_US_f_Allison", "allison", "CC-BY-SA-3.0", _ALLISON),
    "es": ("es_MX_f_Allison", "allison", "CC-BY-SA-3.0", _ALLISON),
    "fr": ("fr_CA_f_June", "june", "CC-BY-SA-3.0",
           "Recorded by June Wallack (junewallack.com); translated into French by Clod "
           "Patry, Kristopher Lalletti and June Wallack. Copyright 2006-2008 June Wallack."),
    "it": ("it_IT_m_Carlo", "carlo", "CC-BY-3.0",
           "Recorded by Carlo Flora (carloflora.com); translated by Silvia Petrin. "
           "Copyright 2012 Carlo Flora."),
    "ru": ("ru_RU_f_IvrvoiceRU", "maxim", "CC-BY-3.0",
           "Provided by Maxim Topal (ivrvoice.ru). Copyright 2010 Maxim."),
}
# voice source -> (system, voice, default f0 mean in Hz (None: not varied), Debian package)
VOICES = {
    "flite-awb": ("flite", "awb", 120.0, "flite"),
    "flite-rms": ("flite", "rms", 105.0, "flite"),
    "flite-slt": ("flite", "slt", 165.0, "flite"),
    "flite-kal16": ("flite", "kal16", 95.0, "flite"),
    "festival-ked": ("festival", "ked_diphone", 105.0, "festvox-kdlpc16k"),
    "festival-kal": ("festival", "kal_diphone", 105.0, "festvox-kallpc16k"),
    "festival-slt-hts": ("festival", "cmu_us_slt_arctic_hts", None, "festvox-us-slt-hts"),
}
REAL_WEIGHT, VOICE_WEIGHT = 2.0, 1.0
LICENCE_NOTES = {
    "codec2-examples": ("LGPL-2.1", "Speech examples of Codec 2, copyright 2007-2019 David "
                        "Rowe and contributors (Debian package codec2-examples)."),
    "bible-kjv-text": ("public domain (KJV text); the reader's legend is kept",
                       "King James Version (1611), public domain. Read with the Bible "
                       "Retrieval System by Chip Chapin, Hewlett Packard Company, whose legend "
                       "follows in the Debian copyright file below."),
    "flite": ("CMU/Edinburgh permissive (BSD-like)", "Synthesized with flite 2 and its "
              "cmu_us_awb, cmu_us_rms, cmu_us_slt and cmu_us_kal16 voices, Carnegie Mellon "
              "University."),
    "festival": ("X11-like permissive", "Synthesized with the Festival Speech Synthesis "
                 "System, University of Edinburgh and Carnegie Mellon University."),
    "festvox-kdlpc16k": ("X11-like permissive", "Voice ked_diphone (Debian festvox-kdlpc16k), "
                         "Centre for Speech Technology Research, University of Edinburgh."),
    "festvox-kallpc16k": ("X11-like permissive", "Voice kal_diphone (Debian festvox-kallpc16k), "
                          "copyright 1998 Alan W Black and Kevin Lenzo."),
    "festvox-us-slt-hts": ("BSD-3-clause", "Voice cmu_us_slt_arctic_hts (Debian "
                           "festvox-us-slt-hts), CMU and Nagoya Institute of Technology."),
}


class PretrainBuildError(RuntimeError):
    """A missing package or tool, or a source that cannot fill its share."""


def normalise_text(text: str) -> str:
    """Lower-case words joined by single spaces (the match key for disjointness)."""
    return " ".join(bb.words_of(text))


def bundled_heldout(manifest=BUNDLED_DIR / "manifest.tsv") -> tuple[set[str], set[str]]:
    """(prompt names, normalised texts) of the bundled corpus's dev and test splits."""
    rows = [r for r in manifest_lib.read_manifest(manifest) if r["split"] in ("dev", "test")]
    return {r["prompt"] for r in rows}, {normalise_text(r["text"]) for r in rows}


def overlaps_heldout(text: str, heldout_texts: set[str]) -> bool:
    """True when the normalised ``text`` contains a held-out text as a run of whole words."""
    padded = f" {normalise_text(text)} "
    return any(f" {t} " in padded for t in heldout_texts if t)


def _rng(seed: int, *key: str) -> np.random.RandomState:
    digest = hashlib.sha256(json.dumps([seed, *key]).encode()).digest()
    return np.random.RandomState(int.from_bytes(digest[:4], "little"))


def _split_of(name: str) -> str:
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    return "dev" if h % DEV_EVERY == 0 else "train"


def _require(tool: str, package: str) -> None:
    if not shutil.which(tool):
        raise PretrainBuildError(f"{tool!r} is not on PATH: install the Debian package "
                                 f"{package}")


# ---------------------------------------------------------------- sources: what each holds

def asterisk_items(lang: str, heldout_prompts: set[str], heldout_texts: set[str]):
    """[(key, path, seconds, text)] of one language's spoken G.722 prompts (held-out ones
    removed), sorted by key (the sound's path with ``/`` -> ``-``, as the bundled corpus
    names them)."""
    root = Path(ASTERISK_ROOT) / ASTERISK[lang][0]
    files = sorted(root.rglob("*.g722"))
    if not files:
        raise PretrainBuildError(f"{root}: no *.g722 files; install the Debian package "
                                 f"asterisk-core-sounds-{lang}-g722")
    texts = {}
    if lang == "en" and os.path.exists(bb.TRANSCRIPTS):
        with gzip.open(bb.TRANSCRIPTS, "rt", encoding="utf-8") as f:
            for line in f:
                if ":" in line and not line.startswith(";"):
                    name, text = (s.strip() for s in line.split(":", 1))
                    texts[name.replace("/", "-")] = text
    out = []
    for p in files:
        key = str(p.relative_to(root).with_suffix("")).replace("/", "-")
        text = texts.get(key, "")
        seconds = p.stat().st_size / 8000.0  # G.722: 64 kbit/s
        if key in ASTERISK_NOT_SPEECH or key.startswith("silence-") or seconds < MIN_S:
            continue  # not speech, or empty (ru ships an empty is.g722)
        if key in heldout_prompts or (text and overlaps_heldout(text, heldout_texts)):
            continue
        out.append((key, str(p), seconds, text))
    return out


def codec2_items():
    """[(key, path, seconds, "")] of the codec2 speech examples, sorted."""
    import glob

    paths = sorted(p for pat in CODEC2_FILES for p in glob.glob(pat)
                   if os.path.basename(p) not in CODEC2_NOT_SPEECH)
    if not paths:
        raise PretrainBuildError("no codec2 speech examples in /usr/share/codec2: install the "
                                 "Debian package codec2-examples")
    return [(Path(p).stem, p, audio_lib.audio_info(p).duration_s, "") for p in paths]


def kjv_verses(heldout_texts: set[str]) -> list[tuple[str, str]]:
    """[(key, verse)] of the KJV with 6-40 words, first occurrence of each text, held-out
    texts removed; key = ``Book-chapter-verse``."""
    _require("bible", "bible-kjv")
    res = subprocess.run(["bible", "-l100000", "Gen1:1-Rev22:21"], capture_output=True,
                         text=True, check=True)
    out, seen, chapter = [], set(), None
    for line in res.stdout.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            chapter = line.strip().replace(" ", "")
            continue
        num, _, verse = line.strip().partition(" ")
        norm = normalise_text(verse)
        n = len(norm.split())
        if (chapter is None or not num.isdigit() or not VERSE_WORDS[0] <= n <= VERSE_WORDS[1]
                or norm in seen or overlaps_heldout(verse, heldout_texts)):
            continue
        seen.add(norm)
        out.append((f"{chapter}-{num}", verse))
    if len(out) < 20000:
        raise PretrainBuildError(f"bible printed only {len(out)} usable verses; expected "
                                 f"~30000 (is bible-kjv-text complete?)")
    return out


def shares(budget_s: float, weights: dict[str, float], caps: dict[str, float]):
    """Water-filling: ``budget_s`` split by weight, no source above its cap, the excess of the
    capped ones shared among the others."""
    out, left, active = {}, budget_s, dict(weights)
    while active:
        unit = left / sum(active.values())
        capped = {s: w for s, w in active.items() if unit * w >= caps[s]}
        if not capped:
            out.update({s: unit * w for s, w in active.items()})
            break
        for s in capped:
            out[s] = caps[s]
            left -= caps[s]
            del active[s]
    return out


# ---------------------------------------------------------------- decoding and synthesis

def decode_g722(path: str) -> np.ndarray:
    """G.722 file -> float32 [S] at 16 kHz (ffmpeg, 16-bit PCM)."""
    res = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "g722", "-i", path,
                          "-f", "s16le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"],
                         capture_output=True, check=False)
    if res.returncode != 0 or not res.stdout:
        raise PretrainBuildError(f"{path}: ffmpeg could not decode it as G.722 "
                                 f"({res.stderr.decode(errors='replace')[-500:]})")
    return np.frombuffer(res.stdout, "<i2").astype(np.float32) / 32768.0


def _chunks(audio: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Recordings over MAX_CHUNK_S -> equal chunks [(start sample, audio)]."""
    n = max(1, math.ceil(len(audio) / (MAX_CHUNK_S * SAMPLE_RATE)))
    bounds = np.linspace(0, len(audio), n + 1).round().astype(int)
    return [(int(a), audio[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def _variation(source: str, seed: int, key: str):
    """(duration stretch, f0 mean in Hz or None) of one synthetic utterance."""
    base = VOICES[source][2]
    if base is None:
        return 1.0, None
    rng = _rng(seed, source, key)
    stretch = round(float(rng.uniform(*STRETCH)), 3)
    return stretch, round(float(rng.uniform(*F0_SCALE)) * base, 1)


def _synth_batch(source, batch, seed, tmp, pool):
    """[(key, text)] -> [(key, text, audio16, segments, stretch, f0)] in order."""
    system, voice = VOICES[source][:2]
    var = {k: _variation(source, seed, k) for k, _ in batch}
    if system == "flite":
        def one(item):
            key, text = item
            stretch, f0 = var[key]
            wav = os.path.join(tmp, f"{source}-{key}.wav")
            segs = bb.synth_flite(voice, text, wav, ("--setf", f"duration_stretch={stretch}",
                                                      "--setf", f"int_f0_target_mean={f0}"))
            return wav, segs
        made = list(pool.map(one, batch))
    else:
        work = tempfile.mkdtemp(dir=tmp)
        setup = {}
        for key, _ in batch:
            stretch, f0 = var[key]
            if f0 is not None:
                setup[key] = (f"(Parameter.set 'Duration_Stretch {stretch})(set! int_lr_params "
                              f"'((target_f0_mean {f0}) (target_f0_std {round(f0 / 7, 1)}) "
                              f"(model_f0_mean 170) (model_f0_std 34)))")
        res = bb.synth_festival(voice, batch, work, setup)
        made = [res[k] for k, _ in batch]
    out = []
    for (key, text), (wav, segs) in zip(batch, made):
        audio = audio_lib.read_audio(wav, SAMPLE_RATE)[0]
        os.remove(wav)
        segs = bb.finish_segments(segs, len(audio) / SAMPLE_RATE, f"{source}/{key}")
        out.append((key, text, audio, segs) + var[key])
    return out


# ---------------------------------------------------------------- the build

def licence_markdown(pkg: str, name: str, note: str, copyright_file: Path) -> str:
    """``LICENSES/<pkg>.md``: the licence's name, what was changed, Debian's copyright file."""
    return (f"# {pkg}\n\nLicence: **{name}**\n\n{note}\n\n"
            f"Debian's copyright file ({copyright_file}), verbatim:\n\n```\n"
            f"{copyright_file.read_text(encoding='utf-8', errors='replace')}```\n")


def licence_row(pkg: str, name: str) -> str:
    """A package's row of the table in ``LICENSES/README.md``."""
    return f"| `{pkg}` | {name} | [LICENSES/{pkg}.md]({pkg}.md) |"


def _licence_files(out: Path, packages: list[str]) -> None:
    lic = out / "LICENSES"
    lic.mkdir(parents=True, exist_ok=True)
    rows = []
    for pkg in packages:
        if pkg.startswith("asterisk-core-sounds-"):
            lang = pkg.split("-")[3]
            name, note = ASTERISK[lang][2], ASTERISK[lang][3] + (
                f" Licensed under {ASTERISK[lang][2]}. Changes: decoded from G.722 to 16 kHz "
                "16-bit FLAC, long files cut into chunks; prompts of the bundled corpus's dev "
                "and test splits left out.")
        else:
            name, note = LICENCE_NOTES[pkg]
        copyright_file = Path("/usr/share/doc") / pkg / "copyright"
        if not copyright_file.exists():
            raise PretrainBuildError(f"{copyright_file} is missing: install the Debian "
                                     f"package {pkg}")
        (lic / f"{pkg}.md").write_text(licence_markdown(pkg, name, note, copyright_file),
                                       encoding="utf-8")
        rows.append(licence_row(pkg, name))
    (lic / "README.md").write_text(
        "# Licences of the pretraining set\n\nEach utterance's `licence` column in "
        "`manifest.tsv` names the files here that apply to it (a synthetic utterance: its "
        "synthesizer, its voice and the text's). Attribution is required for the CC-BY(-SA) "
        "recordings; derivatives of CC-BY-SA-3.0 recordings keep that licence.\n\n"
        "| source package | licence | file |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n",
        encoding="utf-8")


def content_hash(out: str | os.PathLike) -> str:
    """sha256 over every file's relative path and sha256 (HASH and build_time.json left
    out), in sorted path order."""
    out = Path(out)
    h = hashlib.sha256()
    for p in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = p.relative_to(out).as_posix()
        if rel in HASH_EXCLUDED:
            continue
        h.update(f"{rel}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def _take_real(real, share, seed, pool, add) -> None:
    """Adds each recorded source's share: a seeded order of its items, decoded, cut into
    chunks."""
    for source, items in real.items():
        items = [items[j] for j in _rng(seed, source).permutation(len(items))]
        taken, chosen = 0.0, []
        for it in items:
            if taken >= share[source]:
                break
            chosen.append(it)
            taken += it[2]
        if source == "codec2":
            decoded = [audio_lib.read_audio(it[1], SAMPLE_RATE)[0] for it in chosen]
            lang, spk, lic = "en", None, "codec2-examples"
        else:
            lang = source.split("-")[1]
            decoded = list(pool.map(decode_g722, [it[1] for it in chosen]))
            spk, lic = ASTERISK[lang][1], f"asterisk-core-sounds-{lang}-g722"
        for (key, path, _, text), audio in zip(chosen, decoded):
            native = audio_lib.audio_info(path).sample_rate if source == "codec2" else 16000
            pieces = _chunks(audio)
            for start, piece in pieces:
                k = key if len(pieces) == 1 else f"{key}-{start // SAMPLE_RATE:04d}s"
                add(k, piece, text if len(pieces) == 1 else "",
                    speaker=f"{spk}-{lang}" if spk else f"codec2-{key}",
                    split=_split_of(f"{source}/{key}"), alignment="", domain="real",
                    source=source, language=lang,
                    system="recording" if source == "codec2" else "recording-g722",
                    voice=spk or "", licence=f"LICENSES/{lic}.md",
                    channel="telephone-8k" if native == 8000 else "wideband-16k",
                    source_rate=native, origin=f"{path}@{start / SAMPLE_RATE:.2f}s",
                    stretch="", f0_mean_hz="")


def _take_synthetic(verse_lists, share, seed, tmp, pool, add, table) -> None:
    """Adds each synthetic voice's share: its verses synthesized in batches, their
    alignments into ``table``."""
    for source in VOICES:
        system, voice, _, pkg = VOICES[source]
        todo, taken = list(verse_lists[source]), 0.0
        while taken < share[source]:
            if not todo:
                raise PretrainBuildError(f"{source}: ran out of verses before its share "
                                         f"of {share[source]:.0f} s")
            # ~0.4 s per word; a batch aims at the remaining share, at most 64 items.
            n, est = 0, 0.0
            while n < min(64, len(todo)) and est < share[source] - taken:
                est += 0.4 * len(todo[n][1].split())
                n += 1
            batch, todo = todo[:n], todo[n:]
            for key, text, audio, segs, stretch, f0 in _synth_batch(source, batch, seed,
                                                                    tmp, pool):
                if taken >= share[source]:
                    break
                taken += len(audio) / SAMPLE_RATE
                table[f"{source}-{key}"] = segs
                lic = ";".join(f"LICENSES/{p}.md" for p in dict.fromkeys(
                    (system, pkg, "bible-kjv-text")))
                add(key, audio, text, speaker=source, split=_split_of(f"kjv/{key}"),
                    alignment="alignments.tsv", domain="synthetic", source=source,
                    language="en", system=system, voice=voice, licence=lic,
                    channel="wideband-16k", source_rate=SAMPLE_RATE,
                    origin=f"KJV {key}", stretch=stretch,
                    f0_mean_hz="" if f0 is None else f0)


def _metadata(hours, seed, rows, per_source, share, real, held_prompts,
              held_texts) -> dict:
    """The build's ``metadata.json``."""
    total = sum(s for s, _ in per_source.values())
    return {
        "name": "speechmi pretraining set",
        "sample_rate": SAMPLE_RATE,
        "hours_requested": hours,
        "seed": seed,
        "total_duration_s": round(total, 2),
        "num_utterances": len(rows),
        "sources": {s: {"duration_s": round(secs, 2), "utterances": n,
                        "share_s": round(share[s], 2),
                        "domain": "real" if s in real else "synthetic"}
                    for s, (secs, n) in sorted(per_source.items())},
        "real_duration_s": round(sum(per_source[s][0] for s in real), 2),
        "synthetic_duration_s": round(sum(per_source[s][0] for s in VOICES), 2),
        "excluded": {"bundled_heldout_prompts": len(held_prompts),
                     "bundled_heldout_texts": len(held_texts)},
        "build_command": f"python -m speechmi_jax.data.build_pretrain --out DIR --hours {hours} "
                         f"--seed {seed}",
    }


def build(out: str | os.PathLike, hours: float = 3.0, seed: int = 0,
          workers: int | None = None) -> dict:
    """Builds the set into ``out`` (replacing a previous build there) -> its metadata."""
    t0 = time.time()
    out = Path(out)
    if hours <= 0:
        raise ValueError(f"hours must be positive, got {hours}")
    if out.exists() and any(out.iterdir()) and not (out / "manifest.tsv").exists():
        raise PretrainBuildError(f"{out} exists, is not empty and holds no earlier build "
                                 f"(manifest.tsv): refusing to overwrite it")
    for tool, pkg in (("ffmpeg", "ffmpeg"), ("flite", "flite"), ("festival", "festival")):
        _require(tool, pkg)
    held_prompts, held_texts = bundled_heldout()
    real = {f"asterisk-{lang}": asterisk_items(lang, held_prompts, held_texts)
            for lang in ASTERISK}
    real["codec2"] = codec2_items()
    verses = kjv_verses(held_texts)
    order = _rng(seed, "verses").permutation(len(verses))
    voice_names = list(VOICES)
    verse_lists = {v: [verses[j] for j in order[i::len(voice_names)]]
                   for i, v in enumerate(voice_names)}
    weights = {**{s: REAL_WEIGHT for s in real}, **{v: VOICE_WEIGHT for v in VOICES}}
    caps = {**{s: sum(it[2] for it in items) for s, items in real.items()},
            **{v: math.inf for v in VOICES}}
    share = shares(hours * 3600.0, weights, caps)

    if out.exists():
        for name in ("audio", "LICENSES"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("manifest.tsv", "alignments.tsv", "metadata.json", *HASH_EXCLUDED):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    rows, table, per_source = [], {}, {}
    workers = workers or max(2, os.cpu_count() or 1)

    def add(key, audio, text, **meta):
        source = meta["source"]
        rel = f"audio/{source}/{key}.flac"
        bb.write_flac(out / rel, audio, SAMPLE_RATE)
        rows.append(dict(id=f"{source}-{key}", audio=rel, text=text, **meta))
        secs, n = per_source.get(source, (0.0, 0))
        per_source[source] = (secs + len(audio) / SAMPLE_RATE, n + 1)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool, \
            tempfile.TemporaryDirectory() as tmp:
        _take_real(real, share, seed, pool, add)
        _take_synthetic(verse_lists, share, seed, tmp, pool, add, table)

    rows.sort(key=lambda r: r["id"])
    align_lib.write_tsv(out / "alignments.tsv", dict(sorted(table.items())))
    manifest_lib.write_manifest(out / "manifest.tsv", rows, COLUMNS)
    packages = [f"asterisk-core-sounds-{lang}-g722" for lang in ASTERISK] + [
        "codec2-examples", "bible-kjv-text", "flite", "festival",
        *sorted({VOICES[v][3] for v in VOICES} - {"flite"})]
    _licence_files(out, packages)
    meta = _metadata(hours, seed, rows, per_source, share, real, held_prompts, held_texts)
    (out / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n",
                                       encoding="utf-8")
    digest = content_hash(out)
    (out / "HASH").write_text(digest + "\n", encoding="utf-8")
    load = os.getloadavg()
    (out / "build_time.json").write_text(json.dumps(
        {"seconds": round(time.time() - t0, 1), "cpu_count": os.cpu_count(),
         "load_average_1_5_15": [round(x, 2) for x in load]}, indent=1) + "\n",
        encoding="utf-8")
    return dict(meta, content_hash=digest, build_seconds=round(time.time() - t0, 1))


def verify(out: str | os.PathLike) -> str:
    """Recomputes the content hash; raises when it differs from ``HASH``."""
    out = Path(out)
    if not (out / "HASH").is_file():
        raise PretrainBuildError(f"{out / 'HASH'} is missing: {out} is not a finished build")
    want = (out / "HASH").read_text(encoding="utf-8").strip()
    got = content_hash(out)
    if got != want:
        raise PretrainBuildError(f"{out}: content hash {got} differs from HASH {want}")
    return got


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="output folder (keep it outside git)")
    p.add_argument("--hours", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verify", metavar="DIR", help="check DIR's content hash and exit")
    args = p.parse_args(argv)
    if args.verify:
        print(f"{args.verify}: content hash {verify(args.verify)} matches HASH")
        return
    if not args.out:
        p.error("--out is required (or --verify DIR)")
    meta = build(args.out, args.hours, args.seed)
    print(f"{meta['num_utterances']} utterances, {meta['total_duration_s'] / 3600:.2f} h "
          f"({meta['real_duration_s'] / 3600:.2f} h real) in {meta['build_seconds']:.0f} s "
          f"-> {args.out}\ncontent hash {meta['content_hash']}")
    for s, m in meta["sources"].items():
        print(f"  {s:18s} {m['duration_s'] / 60:7.1f} min  {m['utterances']:5d} utterances")


if __name__ == "__main__":
    main()
