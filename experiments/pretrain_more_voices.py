"""A built pretraining set plus three more recorded voices: the Asterisk prompt packages of
other speakers than the core sounds (8 kHz telephone band, resampled to 16 kHz with soxr).

    python experiments/pretrain_more_voices.py --base "$PRETRAIN_DIR" --out "$PRETRAIN_X"

* ``asterisk-prompt-es-co``: Colombian Spanish (GSM, decoded by ffmpeg), GPL;
* ``asterisk-prompt-fr-armelle``: French, Armelle Desjardins (GSM), GPL;
* ``asterisk-prompt-it-menardi-wav``: Italian, Marco Menardi's prompts (WAV), CC-BY-SA-3.0.

Every file of the three packages of at least ``build_pretrain.MIN_S`` and not silent is added, cut into equal chunks of
at most ``build_pretrain.MAX_CHUNK_S`` as ``build_pretrain`` cuts its recordings, ~2 % of the
chunks to ``dev`` by the hash ``build_pretrain`` uses; the base
set's files are hard-linked, its manifest rewritten with the new rows after its own (in
package and path order: the order a training run reads them in), the packages'
copyright files added to ``LICENSES/`` and ``HASH`` recomputed. Deterministic for the same
base set and packages. The README's "Model zoo" section trains APC on it (measured, not
adopted). Needs ``apt-get install asterisk-prompt-es-co asterisk-prompt-fr-armelle
asterisk-prompt-it-menardi-wav ffmpeg``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from speechmi_jax.data import audio as audio_lib
from speechmi_jax.data import build_bundled as bb
from speechmi_jax.data import build_pretrain as bp
from speechmi_jax.data import manifest as manifest_lib

SOUNDS = Path("/usr/share/asterisk/sounds")
DOCS = Path("/usr/share/doc")
# source -> (Debian package, file suffix, language, voice, licence)
VOICES = {"asterisk-es-co": ("asterisk-prompt-es-co", ".gsm", "es", "colombia", "GPL-2.0+"),
          "asterisk-fr-armelle": ("asterisk-prompt-fr-armelle", ".gsm", "fr", "armelle", "GPL-2.0+"),
          "asterisk-it-menardi": ("asterisk-prompt-it-menardi-wav", ".wav", "it", "menardi",
                                  "CC-BY-SA-3.0")}


def package_files(package: str, suffix: str) -> list[Path]:
    listed = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if listed.returncode:
        sys.exit(f"Debian package {package} is not installed: apt-get install {package}")
    return [Path(p) for p in sorted(listed.stdout.split()) if p.endswith(suffix) and Path(p).is_file()]


def decode(path: Path, tmp: Path) -> np.ndarray:
    """A prompt -> float32 mono at 16 kHz (ffmpeg to 8 kHz WAV, then soxr)."""
    wav = tmp / "prompt.wav"
    fmt = ["-f", "gsm"] if path.suffix == ".gsm" else []
    subprocess.run(["ffmpeg", "-v", "error", "-y", *fmt, "-i", str(path), "-ar", "8000", "-ac", "1",
                    str(wav)], check=True)
    return audio_lib.read_audio(str(wav), bp.SAMPLE_RATE)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, type=Path, help="a set built by build_pretrain")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    if args.out.exists():
        sys.exit(f"{args.out} exists; expected a new folder")
    subprocess.run(["cp", "-al", str(args.base), str(args.out)], check=True)
    for name in ("manifest.tsv", "HASH"):  # rewritten below: break the hard links
        (args.out / name).unlink()
    with open(args.base / "manifest.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))  # as written: paths relative to the set
    minutes, licence_rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for source, (package, suffix, lang, voice, licence) in VOICES.items():
            (args.out / "LICENSES" / f"{package}.md").write_text(bp.licence_markdown(
                package, licence, "Changes: decoded to 16 kHz 16-bit FLAC.", DOCS / package / "copyright"),
                encoding="utf-8")
            licence_rows.append(bp.licence_row(package, licence) + "\n")
            total = 0.0
            for path in package_files(package, suffix):
                audio = decode(path, Path(tmp))
                if len(audio) < bp.MIN_S * bp.SAMPLE_RATE or np.abs(audio).max() < 1e-3:
                    continue
                name = path.relative_to(SOUNDS).with_suffix("").as_posix().replace("/", "_")
                for start, piece in bp._chunks(audio):
                    key = name if start == 0 else f"{name}-{start // bp.SAMPLE_RATE:04d}s"
                    rel = f"audio/{source}/{key}.flac"
                    bb.write_flac(args.out / rel, piece, bp.SAMPLE_RATE)
                    rows.append(dict(
                        id=f"{source}-{key}", audio=rel, speaker=f"{voice}-{lang}", text="",
                        split=bp._split_of(f"{source}/{key}"), alignment="", domain="real",
                        source=source, language=lang, system="recording", voice=voice,
                        licence=f"LICENSES/{package}.md", channel="telephone-8k", source_rate=8000,
                        origin=f"{path}@{start / bp.SAMPLE_RATE:.2f}s", stretch="", f0_mean_hz=""))
                total += len(audio) / bp.SAMPLE_RATE
            minutes[source] = round(total / 60, 1)
    table = args.out / "LICENSES" / "README.md"
    text = table.read_text(encoding="utf-8")
    table.unlink()  # hard-linked to the base set's
    table.write_text(text + "".join(licence_rows), encoding="utf-8")
    manifest_lib.write_manifest(args.out / "manifest.tsv", rows, bp.COLUMNS)
    (args.out / "more_voices.json").write_text(json.dumps(
        {"base": str(args.base), "base_hash": (args.base / "HASH").read_text().strip(),
         "minutes": minutes}, indent=1))
    digest = bp.content_hash(args.out)
    (args.out / "HASH").write_text(digest + "\n")
    print(json.dumps({"minutes": minutes, "utterances": len(rows), "hash": digest}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
