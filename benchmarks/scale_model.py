"""Scale model: wall time of the demo's measures over every layer of HuBERT-base / -large on
LibriSpeech train-clean-100 and train-960, on 1, 8 and 64 devices, from measured per-device
throughputs (BENCHMARKS.md, "Scale model").

    python benchmarks/scale_model.py --measure      # per-device throughputs on this machine
    python benchmarks/scale_model.py --encoder-fps base=650,large=200 --probe-us 0.9 ...

``--measure`` times, on one device of this machine, a jitted HuBERT-base and -large forward
(random weights, batch 1, 10 s of audio; medians of 3 after a warm-up) and one step of a linear-probe bank and of an InfoNCE
bank per (layer x grid point), then prints the table and the command that prints it again.

The model (each term is one line of ``predict``):

* encoder pass: frames / (frames/s per device x devices); each process encodes its own share,
  with no communication (``features.py``), plus process 0's merge of the shards, a sequential
  copy of the features at ``--merge-mbs`` (measured by the tests' merge, or your disk's rate);
* banks: every measure's steps x layers x grid points x (per-item step time x items per step
  / devices + one all-reduce per step, ``--allreduce-ms``, on more than one device). The
  demo's banks see capped numbers of items (probes: ``max_train_frames`` and
  ``views.max_pairs``; InfoNCE and CTC: fixed minibatches), so their cost does not grow with
  the corpus; evaluation on dev/test is one more pass every ``eval_every`` steps and is counted
  as steps at the same rate.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from timing import median_seconds

HOURS = {"train-clean-100": 100.6, "train-960": 960.9}   # LibriSpeech training sets
FRAME_RATE = 50.0                                        # HuBERT frames per second of audio
MODELS = {"base": (13, 768), "large": (25, 1024)}        # hidden states, width
DEVICES = (1, 8, 64)
# The demo's measures (configs/demo.py): (steps incl. dev passes, grid points, items per step,
# per-item cost scale), the items being frames (probes), pairs (InfoNCE), utterances (CTC).
DEMO = {
    "phone probe (L-BFGS 50 steps, 20k frames, ~3 evals/step)": ("probe", 150 + 10, 1, 20000),
    "codes_next_k (probe, 64 codes, 60k pairs)": ("probe", 150 + 10, 1, 60000),
    "infonce_next_k_aligned (K=16, 600 steps, 2 lrs)": ("infonce", 600 + 6, 2, 512),
    "ctc (400 steps, 2 lrs, 16 utterances)": ("ctc", 400 + 2, 2, 16),
}


def predict(args, model: str, hours: float, devices: int) -> dict[str, float]:
    """Seconds per stage for one encoder on one corpus over ``devices`` devices."""
    layers, width = MODELS[model]
    frames = hours * 3600 * FRAME_RATE
    out = {"encode": frames / (args.encoder_fps[model] * devices)}
    feature_mb = layers * width * 2 * frames / 1e6                 # float16 cache
    out["merge"] = feature_mb / args.merge_mbs if devices > 1 else 0.0
    scale = width / 768                                             # per-item cost ~ width
    per_item = {"probe": args.probe_us * 1e-6 * scale, "infonce": args.infonce_us * 1e-6 * scale,
                "ctc": args.ctc_ms * 1e-3 * scale}
    bank = 0.0
    for kind, steps, grid, items in DEMO.values():
        step = per_item[kind] * items / devices + (args.allreduce_ms * 1e-3 if devices > 1 else 0)
        bank += steps * layers * grid * step
    out["banks"] = bank
    out["features_tb"] = feature_mb / 1e6
    return out


def table(args) -> str:
    rows = ["| model | corpus | devices | encode | merge | banks | total | feature cache |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model in MODELS:
        for corpus, hours in HOURS.items():
            for d in DEVICES:
                t = predict(args, model, hours, d)
                total = t["encode"] + t["merge"] + t["banks"]
                rows.append(f"| HuBERT-{model} | {corpus} | {d} | {_hms(t['encode'])} | "
                            f"{_hms(t['merge'])} | {_hms(t['banks'])} | **{_hms(total)}** | "
                            f"{t['features_tb']:.2f} TB |")
    return "\n".join(rows)


def _hms(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def measure() -> dict:
    """Per-device throughputs on this machine's first device."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from speechmi_jax.encoders import wav2vec2
    from speechmi_jax.estimators import bank
    from speechmi_jax.estimators.infonce import infonce_problem
    from speechmi_jax.estimators.probe import probe_problem

    out = {}
    x, n = np.zeros((1, 160000), np.float32), np.array([160000], np.int32)
    for model in MODELS:
        enc = wav2vec2.random_wav2vec2_family(f"hubert-{model}", seed=0)
        frames = int(enc.num_frames(n)[0])
        out[model] = frames / median_seconds(lambda: enc(x, n).hidden_states.block_until_ready(), 3)
    layers, points, d = 4, 2, 768

    def bank_seconds(problem, batch, in_dims):
        grid = bank.Grid.product((1e-3,) * points)
        state = bank.init_state(problem, "adam", grid, layers, in_dims, 0)
        step = jax.jit(lambda st, b: bank.bank_step(problem, "adam", st["params"], st["opt"],
                                                    grid.arrays(), b)[2])
        return median_seconds(lambda: step(state, batch).block_until_ready(), 3) / (layers * points)

    rng = np.random.default_rng(0)
    items = 20000
    probe = probe_problem("linear", tuple(np.log(np.full(40, 1 / 40))))
    batch = {"x": jnp.asarray(rng.standard_normal((layers, items, d), np.float32)),
             "y": jnp.asarray(rng.integers(0, 40, items), jnp.int32), "w": jnp.ones(items)}
    out["probe_us"] = bank_seconds(probe, batch, (d, 40)) / items * 1e6
    k = 512
    nce = infonce_problem("separable", k)
    batch = {"a": jnp.asarray(rng.standard_normal((layers, k, d), np.float32)),
             "b": jnp.asarray(rng.standard_normal((layers, k, d), np.float32)), "w": jnp.ones(k)}
    out["infonce_us"] = bank_seconds(nce, batch, (d, d)) / k * 1e6
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--measure", action="store_true", help="measure the throughputs here first")
    p.add_argument("--encoder-fps", default="base=650,large=200",
                   help="frames/s per device of the forward pass, model=value,...")
    p.add_argument("--probe-us", type=float, default=0.9,
                   help="probe bank step, microseconds per item per (layer x grid point), D=768")
    p.add_argument("--infonce-us", type=float, default=5.0,
                   help="InfoNCE bank step, microseconds per pair per (layer x grid point), D=768")
    p.add_argument("--ctc-ms", type=float, default=0.3,
                   help="CTC bank step, ms per utterance per (layer x grid point), D=768")
    p.add_argument("--allreduce-ms", type=float, default=1.0,
                   help="one all-reduce of a bank step across devices (0 on one device)")
    p.add_argument("--merge-mbs", type=float, default=500.0,
                   help="process 0's shard merge, MB/s (sequential copy of the float16 cache)")
    args = p.parse_args(argv)
    if args.measure:
        m = measure()
        args.encoder_fps = f"base={m['base']:.0f},large={m['large']:.0f}"
        args.probe_us, args.infonce_us = round(m["probe_us"], 3), round(m["infonce_us"], 3)
    args.encoder_fps = {k: float(v) for k, v in
                        (kv.split("=") for kv in str(args.encoder_fps).split(","))}
    command = ["python", "benchmarks/scale_model.py", "--encoder-fps",
               ",".join(f"{k}={v:g}" for k, v in args.encoder_fps.items()),
               "--probe-us", f"{args.probe_us:g}", "--infonce-us", f"{args.infonce_us:g}",
               "--ctc-ms", f"{args.ctc_ms:g}", "--allreduce-ms", f"{args.allreduce_ms:g}",
               "--merge-mbs", f"{args.merge_mbs:g}"]
    print("    " + shlex.join(command) + "\n")
    print(table(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
