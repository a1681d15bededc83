"""Peak memory of feature extraction does not grow with the corpus.

Runs ``extract_features`` in fresh subprocesses over the bundled corpus repeated 1x and 4x
(the same audio under distinct utterance ids), and, as the reference, the same batches
collected in memory (a list of arrays concatenated at the end, what a script without a
cache does). Reports each run's peak RSS (``ru_maxrss``) and the 4x/1x ratios.

    python benchmarks/bench_features_rss.py [--encoder logmel] [--utterances 660]

Takes ~3 min on a 2-core CPU with ``logmel`` (D = 80, 100 frames/s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r'''
import json, resource, sys, tempfile
import numpy as np
from speechmi_jax.data.corpus import load_corpus
from speechmi_jax.encoders.registry import load_encoder
from speechmi_jax import features as F

manifest, mode, enc_name, cache = sys.argv[1:5]
enc = load_encoder(enc_name)
corpus = load_corpus(manifest)
if mode == "cache":
    fs = F.extract_features(enc, corpus, cache, progress=False)
    n = fs.num_frames
else:  # reference: every batch's real frames kept in memory, concatenated at the end
    import numpy as np
    from speechmi_jax.encoders.base import bucket_length
    utts = list(corpus)
    lengths = np.asarray([u.num_samples for u in utts])
    nf = enc.num_frames(lengths)
    kept = []
    for batch in F._batches(lengths, 16, int(240 * enc.sample_rate), enc.sample_rate):
        padded = bucket_length(int(lengths[batch].max()), enc.sample_rate)
        wav = np.zeros((len(batch), padded), np.float32)
        for j, i in enumerate(batch):
            wav[j, :lengths[i]] = utts[i].audio
        hs = np.asarray(enc(wav, lengths[batch]).hidden_states)
        kept += [hs[:, j, :nf[i]].astype(np.float16) for j, i in enumerate(batch)]
    n = int(np.concatenate(kept, axis=1).shape[1])
print(json.dumps(dict(frames=n, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
'''


def repeated_manifest(path: str, times: int, limit: int) -> None:
    from speechmi_jax.data.corpus import BUNDLED_DIR

    lines = (BUNDLED_DIR / "manifest.tsv").read_text().splitlines()
    header, rows = lines[0].split("\t"), [l.split("\t") for l in lines[1:limit + 1]]
    i_id, i_audio, i_al = header.index("id"), header.index("audio"), header.index("alignment")
    out = ["\t".join(header + ["copy"])]
    for k in range(times):
        for r in rows:
            r = list(r)
            r[i_audio] = str(BUNDLED_DIR / r[i_audio])
            r[i_al] = str(BUNDLED_DIR / r[i_al])
            utt = r[i_id]
            r[i_id] = f"{utt}#{k}"
            out.append("\t".join(r + [str(k)]))
    # The bundled alignments are keyed by the original ids: write a copy keyed by the new ones.
    al_lines = (BUNDLED_DIR / "alignments.tsv").read_text().splitlines()
    al_out = [al_lines[0]] + [f"{l.split(chr(9), 1)[0]}#{k}\t{l.split(chr(9), 1)[1]}"
                              for k in range(times) for l in al_lines[1:]]
    al_path = os.path.join(os.path.dirname(path), "alignments.tsv")
    with open(al_path, "w") as f:
        f.write("\n".join(al_out) + "\n")
    out = [out[0]] + [l.replace(str(BUNDLED_DIR / "alignments.tsv"), al_path) for l in out[1:]]
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default="logmel")
    p.add_argument("--utterances", type=int, default=660, help="bundled utterances per copy")
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for times in (1, 4):
            d = os.path.join(tmp, f"x{times}")
            os.makedirs(d)
            manifest = os.path.join(d, "manifest.tsv")
            repeated_manifest(manifest, times, args.utterances)
            for mode in ("cache", "in-memory"):
                res = subprocess.run([sys.executable, "-c", CHILD, manifest, mode, args.encoder,
                                      os.path.join(d, "cache")], capture_output=True, text=True)
                if res.returncode != 0:
                    sys.exit(res.stderr[-3000:])
                results[(mode, times)] = json.loads(res.stdout.strip().splitlines()[-1])
                print(f"{mode:9s} x{times}: {results[(mode, times)]}", flush=True)
    for mode in ("cache", "in-memory"):
        a, b = results[(mode, 1)], results[(mode, 4)]
        print(f"{mode:9s}: peak RSS x4/x1 = {b['peak_rss_mb'] / a['peak_rss_mb']:.3f} "
              f"({a['peak_rss_mb']:.0f} -> {b['peak_rss_mb']:.0f} MB; frames "
              f"{a['frames']} -> {b['frames']})")


if __name__ == "__main__":
    main()
