"""How Whisper's analysis window changes its hidden states, a phone probe, and the cost.

Whisper was trained on 30 s windows; the field zero-pads every utterance to 30 s and crops
the hidden states (our default). A shorter window (``window_seconds``, positional table
truncated) is much cheaper on short utterances but shifts the input distribution. For each
window this script reports, on bundled-corpus utterances:

* cost: wall and CPU seconds per utterance (steady state: batches whose shape was compiled
  already; CPU = ``time.process_time``, every thread of the process) and their ratios to 30 s;
* relative error per layer against the 30 s window, over real frames:
  ``||h_W - h_30||_F / ||h_30||_F``;
* phone accuracy per layer of a multinomial logistic-regression probe (standardised
  features, Adam, full batch) trained on train-split frames, tested on test-split frames;
  the same probe on the log-mel baseline and on random-init Whisper tiny (30 s) for scale.

Command (about 10 min on the 2-core CPU under load, most of it the 30 s windows); it ends
with the markdown table of BENCHMARKS.md ("Whisper windows"):

    python benchmarks/whisper_window.py --model whisper-tiny.en --windows 30,10,4 \
        --train-per-speaker 12 --test-per-speaker 5
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import speechmi_jax as smi
from speechmi_jax import frames
from speechmi_jax.encoders import base, whisper


def pick(corpus, split, per_speaker):
    by = {}
    for u in corpus.split(split):
        by.setdefault(u.speaker, []).append(u)
    return [u for s in sorted(by) for u in by[s][:per_speaker]]


def encode(enc, utts, batch_size=8):
    """Real-frame hidden states per utterance: list of [L+1, T_i, D], and (wall, CPU) s/utt at
    steady state."""
    order = np.argsort([u.num_samples for u in utts])
    out = [None] * len(utts)
    timed, cpu, timed_n = 0.0, 0.0, 0
    seen = set()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        audio = [utts[i].audio for i in idx]
        s = base.bucket_length(max(len(a) for a in audio))
        x = np.zeros((batch_size, s), np.float32)
        lengths = np.zeros(batch_size, np.int64)
        for j, a in enumerate(audio):
            x[j, :len(a)], lengths[j] = a, len(a)
        t0, c0 = time.perf_counter(), time.process_time()
        res = enc(x, lengths)
        hs = np.asarray(jax.block_until_ready(res.hidden_states))
        if s in seen:  # compiled already: count it
            timed += time.perf_counter() - t0
            cpu += time.process_time() - c0
            timed_n += batch_size
        seen.add(s)
        nf = enc.num_frames(lengths)
        for j, i in enumerate(idx):
            out[i] = hs[:, j, :nf[j]]
    nan = float("nan")
    return out, ((timed / timed_n, cpu / timed_n) if timed_n else (nan, nan))


def labels(enc, utts, phone_ids):
    return [frames.segments_to_frame_labels(u.phones, int(enc.num_frames([u.num_samples])[0]),
                                            enc.frame_rate, enc.frame_offset_s, phone_ids)
            for u in utts]


def probe_accuracy(z_tr, y_tr, z_te, y_te, num_classes, steps=400, lr=3e-3, l2=1e-4):
    """Logistic-regression phone probe: accuracy on the test frames."""
    mu, sd = z_tr.mean(0), z_tr.std(0) + 1e-6
    z_tr, z_te = (z_tr - mu) / sd, (z_te - mu) / sd
    params = {"w": jnp.zeros((z_tr.shape[1], num_classes)), "b": jnp.zeros(num_classes)}
    opt = optax.adam(lr)

    def loss(p):
        logits = z_tr @ p["w"] + p["b"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y_tr).mean()
        return ce + l2 * jnp.sum(p["w"] ** 2)

    @jax.jit
    def run(p):
        def step(carry, _):
            p, s = carry
            g = jax.grad(loss)(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None
        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=steps)
        return p

    p = run(params)
    return float(np.mean(np.argmax(z_te @ np.asarray(p["w"]) + np.asarray(p["b"]), -1) == y_te))


def layer_probe(feats_tr, lab_tr, feats_te, lab_te, num_classes):
    """Per-layer probe accuracy: features lists of [L+1, T, D]."""
    y_tr, y_te = np.concatenate(lab_tr), np.concatenate(lab_te)
    k_tr, k_te = y_tr >= 0, y_te >= 0
    z_tr, z_te = np.concatenate(feats_tr, axis=1), np.concatenate(feats_te, axis=1)
    return [probe_accuracy(jnp.asarray(z_tr[l][k_tr]), jnp.asarray(y_tr[k_tr]), z_te[l][k_te], y_te[k_te],
                           num_classes) for l in range(z_tr.shape[0])]


def markdown_table(results: dict, model: str) -> str:
    """The BENCHMARKS.md table: one row per window, then the log-mel and random-init rows."""
    def accs(acc):
        best = int(np.argmax(acc))
        return " ".join(f"**{a:.3f}**" if i == best and len(acc) > 1 else f"{a:.3f}"
                        for i, a in enumerate(acc))

    n = len(next(iter(results["windows"].values()))["probe_acc"])
    lines = [f"| window | wall s/utt | CPU s/utt | cost vs 30 s | rel. err. per layer 0..{n - 1} "
             f"| probe acc. per layer 0..{n - 1} |", "| --- | --- | --- | --- | --- | --- |"]
    for w, row in results["windows"].items():
        ratio = ("1" if w == 30.0 else f"{row['cost_ratio_to_30s']:.3f} "
                 f"(CPU {row['cpu_ratio_to_30s']:.3f})") if "cost_ratio_to_30s" in row else ""
        err = " ".join(f"{e:.3g}" for e in row["rel_err"]) if "rel_err" in row else "reference"
        label = f"{w:g} s" + (" (default)" if w == 30.0 else "")
        lines.append(f"| {label} | {row['s_per_utt']:.3g} | {row['cpu_s_per_utt']:.3g} | {ratio} "
                     f"| {err} | {accs(row['probe_acc'])} |")
    lm, rnd = results["logmel"], results["random:whisper-tiny"]
    lines.append(f"| log-mel baseline | {lm['s_per_utt']:.3g} | {lm['cpu_s_per_utt']:.3g} | | "
                 f"| {accs(lm['probe_acc'])} |")
    lines.append(f"| random-init Whisper tiny, 30 s | {rnd['s_per_utt']:.3g} | "
                 f"{rnd['cpu_s_per_utt']:.3g} | | | {accs(rnd['probe_acc'])} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--windows", default="30,10,4")
    ap.add_argument("--train-per-speaker", type=int, default=12)
    ap.add_argument("--test-per-speaker", type=int, default=5)
    ap.add_argument("--json", default=None, help="write the results here too")
    args = ap.parse_args()

    corpus = smi.load_corpus("bundled")
    phone_ids = {p: i for i, p in enumerate(corpus.metadata["phone_set"])}
    train = pick(corpus, "train", args.train_per_speaker)
    test = pick(corpus, "test", args.test_per_speaker)
    print(f"{len(train)} train / {len(test)} test utterances, "
          f"{sum(u.num_samples for u in train + test) / 16000:.1f} s of audio")
    results = {"windows": {}}

    enc0 = smi.load_encoder(args.model)
    ref = None
    for w in [float(v) for v in args.windows.split(",")]:
        enc = whisper.with_window(enc0, w)
        t0 = time.perf_counter()
        f_tr, c_tr = encode(enc, train)
        f_te, c_te = encode(enc, test)
        wall = time.perf_counter() - t0
        cost, cpu = np.nanmean([c_tr[0], c_te[0]]), np.nanmean([c_tr[1], c_te[1]])
        lab_tr, lab_te = labels(enc, train, phone_ids), labels(enc, test, phone_ids)
        acc = layer_probe(f_tr, lab_tr, f_te, lab_te, len(phone_ids))
        row = {"s_per_utt": cost, "cpu_s_per_utt": cpu, "wall_s": wall, "probe_acc": acc}
        if ref is None:
            ref = f_tr + f_te
        else:
            num = sum(((a - b) ** 2).sum(axis=(1, 2)) for a, b in zip(f_tr + f_te, ref))
            den = sum((b ** 2).sum(axis=(1, 2)) for b in ref)
            row["rel_err"] = list(np.sqrt(num / den))
        results["windows"][w] = row
        print(f"window {w:g} s: {cost:.3f} s/utt, {cpu:.3f} CPU-s/utt (wall {wall:.0f} s), probe acc per layer "
              f"{np.round(acc, 3).tolist()}" + (f", rel err per layer {np.round(row['rel_err'], 3).tolist()}"
                                                if "rel_err" in row else ""), flush=True)
    w30 = results["windows"].get(30.0)
    if w30:
        for w, row in results["windows"].items():
            row["cost_ratio_to_30s"] = row["s_per_utt"] / w30["s_per_utt"]
            row["cpu_ratio_to_30s"] = row["cpu_s_per_utt"] / w30["cpu_s_per_utt"]
            print(f"  cost ratio window {w:g} s / 30 s: {row['cost_ratio_to_30s']:.3f} "
                  f"(CPU {row['cpu_ratio_to_30s']:.3f})")

    for name in ("logmel", "random:whisper-tiny"):
        enc = smi.load_encoder(name)
        f_tr, (c, c_cpu) = encode(enc, train)
        f_te, _ = encode(enc, test)
        acc = layer_probe(f_tr, labels(enc, train, phone_ids), f_te, labels(enc, test, phone_ids),
                          len(phone_ids))
        results[name] = {"s_per_utt": c, "cpu_s_per_utt": c_cpu, "probe_acc": acc}
        print(f"{name}: {c:.3f} s/utt, {c_cpu:.3f} CPU-s/utt, probe acc per layer "
              f"{np.round(acc, 3).tolist()}", flush=True)
    print()
    print(markdown_table(results, args.model))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=float)


if __name__ == "__main__":
    main()
