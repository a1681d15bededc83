"""Pretraining step throughput at the zoo's recipe: JAX vs PyTorch on the same model and loss; a
population step vs P sequential steps. Results go to BENCHMARKS.md ("Pretraining").

* MLM: ``configs/zoo/melhubert_4x256.py`` (stacked log-mel -> 4 bidirectional pre-LN layers of
  width 256, span-masked input with a learned embedding, softmax over 100 codes at masked
  frames plus the recipe's ``targets.unmasked_weight`` times that at unmasked frames, AdamW)
  as the product's jitted train step vs a PyTorch module of the same shape and loss
  (``torch.stft`` log-mel, ``nn.TransformerEncoderLayer`` pre-LN).
* APC: ``configs/zoo/melapc_4x256.py`` (the same backbone made causal, L1 on the stacked log-mel
  frame t + 2) vs the PyTorch module with a causal mask and a left-padded positional conv.
* population: one vmapped step of the 3 x 128 recipe with P = 2 members vs 2 steps of one.

Batch 16 x 2 s at 16 kHz (the recipe's); median of ``--repeats`` steps after warm-up; one
process, the machine as it is (state its load with the numbers). torch is a benchmark-only
reference; the product's step also computes the objective's bound (Gaussian p_psi for APC), the
PyTorch one only the loss.

    python benchmarks/bench_pretrain.py --repeats 10
    python benchmarks/bench_pretrain.py --torch-device cuda   # both on the GPU (JAX's default backend)
    python benchmarks/bench_pretrain.py --parts               # where the JAX step's time goes
    python benchmarks/bench_pretrain.py --matmuls             # one layer's dense products alone

``--parts`` times the MLM recipe's backbone alone (JAX, forward and forward + backward to the
last hidden state, no head or optimiser) as built and with 1 layer, with 2 layers, with 2
layers of FFN width 256 and with 2 layers of one head, then the grouped positional conv alone
(with XLA's gradient, and as built: ``logmel_transformer.grouped_conv1d``), and counts the
minor page faults of a forward + backward (``getrusage``; the malloc settings of
``speechmi_jax/launch.py``, or glibc's with ``SPEECHMI_MALLOC=default``).

``--matmuls`` times the dense products of one layer of the MLM recipe alone (the forward
X @ W, the backward's dX and dW), JAX against PyTorch on the same arrays: the step's matmuls.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path

from speechmi_jax import launch

# Before numpy / jax / torch are imported, as the `speechmi` command does (speechmi_jax/launch.py);
# SPEECHMI_MALLOC=default measures with glibc's own settings. Both steps run under the same ones.
MALLOC_KEPT = launch.keep_freed_memory()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from speechmi_jax.encoders import audio_features as af  # noqa: E402
from speechmi_jax.encoders import logmel_transformer as lmt  # noqa: E402
from speechmi_jax.ssl import models, trainer  # noqa: E402
from timing import add_device_args, describe_devices, median_seconds, setup_devices  # noqa: E402 (benchmarks/timing.py)

B, S, K = 16, 32000, 100


def recipe(name: str, overrides=()):
    return trainer.load_pretrain_config(f"zoo/{name}", ["corpus=unused", *overrides])[1]


def jax_step_seconds(task, config, members, repeats, batch):
    optim = tuple(sorted((k, v) for k, v in config.optim.to_dict().items() if k != "warmup_steps"))
    shape = trainer.mesh_shape(len(members), B, len(jax.devices()))
    init, step, _ = trainer.compiled(task, optim, shape)
    state = init(jnp.stack([jax.random.PRNGKey(m["seed"]) for m in members]))
    hp = trainer.hyperparameters(members, config, task)
    box = {"s": state}

    def run():
        box["s"], m = step(box["s"], batch, hp)
        jax.block_until_ready(m)
    return median_seconds(run, repeats)


def backbone_parts(repeats: int, audio, lengths):
    """Rows (what, forward s, forward + backward s, page faults per forward + backward) of the
    MLM recipe's backbone and variants."""
    rows = []
    for what, sets in (("as built (4 layers)", []), ("1 layer", ["model.logmel.num_layers=1"]),
                       ("2 layers", ["model.logmel.num_layers=2"]),
                       ("2 layers, FFN width 256", ["model.logmel.num_layers=2", "model.logmel.intermediate_size=256"]),
                       ("2 layers, 1 head", ["model.logmel.num_layers=2", "model.logmel.num_heads=1"])):
        module = trainer.backbone(recipe("melhubert_4x256", sets)).module()
        params = module.init(jax.random.PRNGKey(0), audio[:1, :16000], lengths[:1] // 2)
        last = lambda p: module.apply(p, audio, lengths).hidden_states[-1]
        rows.append((what, *_fwd_and_grad(last, params, repeats)))
    m = recipe("melhubert_4x256").model.logmel
    d, k, g = m.hidden_size, m.pos_conv_kernel, m.pos_conv_groups
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((B, S // 320, d)), jnp.float32)
    w = jnp.asarray(0.05 * rng.standard_normal((k, d // g, d)), jnp.float32)
    pad = (k // 2, k - 1 - k // 2)
    xla = lambda w: lmt._conv1d(x, w, pad, g)  # the convolution, XLA's own gradient
    shape = f"{B} x {S // 320} x {d}, kernel {k}, {g} groups"
    rows.append((f"positional conv alone ({shape}), XLA's gradient", *_fwd_and_grad(xla, w, repeats)))
    ours = lambda w: lmt.grouped_conv1d(x, w, pad, g)
    rows.append((f"positional conv alone ({shape}), as built (`grouped_conv1d`)", *_fwd_and_grad(ours, w, repeats)))
    return rows


def _fwd_and_grad(fn, params, repeats):
    """-> forward s, forward + backward s (medians), minor page faults per forward + backward."""
    fwd, grad = jax.jit(fn), jax.jit(jax.grad(lambda p: jnp.sum(fn(p) ** 2)))
    f = median_seconds(lambda: jax.block_until_ready(fwd(params)), repeats)
    jax.block_until_ready(grad(params))  # compiled: the faults below are the steps' own
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fb = median_seconds(lambda: jax.block_until_ready(grad(params)), repeats)  # repeats + 1 calls
    return f, fb, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (repeats + 1)


def torch_model(m: dict, causal: bool, out_dim: int, device):
    """The log-mel transformer of ``model.logmel`` (m) in PyTorch, with a linear head."""
    import torch
    from torch import nn

    d, stack, k, g = m["hidden_size"], m["stack"], m["pos_conv_kernel"], m["pos_conv_groups"]
    mel = torch.tensor(af.mel_filterbank(), dtype=torch.float32, device=device)
    window = torch.hann_window(af.N_FFT, device=device)

    class LogMelTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(stack * 80, d)
            self.pos = nn.Conv1d(d, d, k, groups=g)
            self.mask_emb = nn.Parameter(torch.rand(d))
            self.layers = nn.ModuleList([nn.TransformerEncoderLayer(
                d, m["num_heads"], m["intermediate_size"], 0.0, "gelu", batch_first=True, norm_first=True)
                for _ in range(m["num_layers"])])
            self.norm = nn.LayerNorm(d)
            self.head = nn.Linear(d, out_dim)

        def forward(self, w, masked=None):
            spec = torch.stft(w, af.N_FFT, af.HOP, window=window, center=True, return_complex=True)
            lm = torch.log10(torch.clamp(spec.abs().pow(2).transpose(1, 2) @ mel, min=1e-10))[:, :-1]
            lm = (torch.maximum(lm, lm.amax(dim=(1, 2), keepdim=True) - 8.0) + 4.0) / 4.0
            lm = lm.reshape(lm.shape[0], lm.shape[1] // stack, stack * 80)
            x = self.inp(lm)
            if masked is not None:
                x = torch.where(masked[..., None], self.mask_emb, x)
            pad = (k - 1, 0) if causal else (k // 2, k - 1 - k // 2)
            x = x + nn.functional.gelu(self.pos(nn.functional.pad(x.transpose(1, 2), pad))).transpose(1, 2)
            t = x.shape[1]
            attn = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), 1) if causal else None
            for layer in self.layers:
                x = layer(x, src_mask=attn)
            return self.head(self.norm(x)), lm
    return LogMelTransformer().to(device)


def torch_step_seconds(config, repeats, audio, objective, device, sync):
    import torch

    causal = objective == "apc"
    model = torch_model(dict(config.model.logmel), causal, config.model.logmel.stack * 80 if causal else K, device)
    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.01)
    w = torch.tensor(np.asarray(audio), device=device)
    t = S // models.lmt.MelArch(**dict(config.model.logmel)).hop
    gen = torch.Generator(device=device).manual_seed(0)
    n = int(config.population.shift[0])

    def run():
        if causal:
            pred, lm = model(w)
            loss = (pred[:, :-n] - lm[:, n:].detach()).abs().mean()
        else:
            masked = torch.rand(B, t, generator=gen, device=device) < 0.5
            codes = torch.randint(0, K, (B, t), generator=gen, device=device)
            logits, _ = model(w, masked)
            ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), codes, reduction="none")
            loss = ce[masked].mean() + config.targets.unmasked_weight * ce[~masked].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
    return median_seconds(run, repeats)


def dense_matmuls(repeats: int, device, sync) -> tuple[int, list[tuple]]:
    """(frames n, rows (layer, [din, dout], product, times counted, JAX s, PyTorch s)) for the
    dense layers of one layer of the zoo backbone (``melhubert_4x256``'s widths) over its B x T
    = n frames: the forward x @ W and the backward's two products, dX = dY @ W^T and
    dW = X^T @ dY, each alone, jitted in JAX and in PyTorch on the same arrays."""
    import torch

    m = recipe("melhubert_4x256").model.logmel
    d, f = int(m.hidden_size), int(m.intermediate_size)
    n = B * (S // models.lmt.MelArch(**dict(m)).hop)
    rng = np.random.default_rng(0)
    products = {"forward X @ W": (lambda x, w, dy: x @ w),
                "dX = dY @ W^T": (lambda x, w, dy: dy @ w.T),
                "dW = X^T @ dY": (lambda x, w, dy: x.T @ dy)}
    rows = []
    for layer, (din, dout), times in (("attention q, k, v, out", (d, d), 4), ("FFN up", (d, f), 1),
                                      ("FFN down", (f, d), 1)):
        arrays = [rng.standard_normal(s).astype(np.float32) for s in ((n, din), (din, dout), (n, dout))]
        jx = [jnp.asarray(a) for a in arrays]
        tx = [torch.tensor(a, device=device) for a in arrays]
        for what, fn in products.items():
            jfn = jax.jit(fn)
            j = median_seconds(lambda: jax.block_until_ready(jfn(*jx)), repeats)

            def run():
                fn(*tx)
                sync()
            rows.append((layer, (din, dout), what, times, j, median_seconds(run, repeats)))
    return n, rows


def malloc_note() -> str:
    return "malloc: speechmi's (launch.py)" if MALLOC_KEPT else "malloc: glibc's defaults"


def ms(seconds: float) -> str:
    """Milliseconds, with two decimals below 100 ms (GPU steps)."""
    return f"{1e3 * seconds:.0f}" if seconds >= 0.1 else f"{1e3 * seconds:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    add_device_args(ap)
    ap.add_argument("--parts", action="store_true", help="time the MLM backbone's parts (JAX only)")
    ap.add_argument("--matmuls", action="store_true",
                    help="time one layer's dense products alone, JAX vs PyTorch")
    args = ap.parse_args()
    if args.parts:
        rng = np.random.default_rng(0)
        audio = jnp.asarray(0.1 * rng.standard_normal((B, S)), jnp.float32)
        print(f"jax {jax.__version__} on {jax.default_backend()}, {malloc_note()}, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"\n| MLM backbone, batch {B} x 2 s | forward ms | forward + backward ms | ratio "
              "| page faults per forward + backward |")
        print("| --- | --- | --- | --- | --- |")
        for what, f, fb, faults in backbone_parts(args.repeats, audio, jnp.full((B,), S, jnp.int32)):
            print(f"| {what} | {ms(f)} | {ms(fb)} | {fb / f:.1f} | {faults:,.0f} |")
        return 0
    import torch

    device, sync = setup_devices(args)
    cores = os.cpu_count()
    print(f"{describe_devices(args)}; torch with {torch.get_num_threads()} threads, {cores} cores, "
          f"{malloc_note()}, load average {os.getloadavg()[0]:.1f}")
    if args.matmuls:
        n, rows = dense_matmuls(args.repeats, device, sync)
        print(f"\n| dense layer ({n} frames) | [in, out] | product | JAX ms | PyTorch ms | PyTorch / JAX |")
        print("| --- | --- | --- | --- | --- | --- |")
        total = np.zeros(2)
        for layer, shape, what, times, j, t in rows:
            print(f"| {layer} | {list(shape)} | {what} | {ms(j)} | {ms(t)} | {t / j:.2f} |")
            total += times * np.array([j, t])
        print(f"| a layer's dense products (q, k, v, out counted 4 times) | | | {ms(total[0])} | "
              f"{ms(total[1])} | {total[1] / total[0]:.2f} |")
        return 0
    rng = np.random.default_rng(0)
    audio = jnp.asarray(0.1 * rng.standard_normal((B, S)), jnp.float32)
    lengths = jnp.full((B,), S, jnp.int32)
    rows = []
    for name in ("melhubert_4x256", "melapc_4x256"):
        config = recipe(name)
        bb = trainer.backbone(config)
        if config.objective == "hubert":
            task = models.MaskedTask("hubert", bb, num_codes=K, h_target_bits=float(np.log2(K)),
                                     unmasked_weight=config.targets.unmasked_weight)
            codes = jnp.asarray(rng.integers(0, K, (B, int(bb.num_frames(np.asarray(S))))), jnp.int32)
            batch = {"audio": audio, "lengths": lengths, "codes": codes}
        else:
            task = trainer.build_task(config, None, None, Path("."))
            batch = {"audio": audio, "lengths": lengths}
        j = jax_step_seconds(task, config, trainer.population(config), args.repeats, batch)
        t = torch_step_seconds(config, args.repeats, audio, config.objective, device, sync)
        rows.append((name, j, t, int(bb.num_frames(np.asarray(S)))))

    small = recipe("melapc_3x128")
    task = trainer.build_task(small, None, None, Path("."))
    members = trainer.population(small)
    batch = {"audio": audio, "lengths": lengths}
    j_pop = jax_step_seconds(task, small, members, args.repeats, batch)
    j_one = jax_step_seconds(task, small, members[:1], args.repeats, batch)

    per_core = jax.default_backend() == "cpu"
    unit = "JAX frames/s/core" if per_core else "JAX frames/s"
    print(f"\n| step (batch {B} x 2 s, the zoo recipe) | JAX ms | PyTorch ms | PyTorch / JAX | {unit} |")
    print("| --- | --- | --- | --- | --- |")
    for name, j, t, frames in rows:
        print(f"| `{name}` | {ms(j)} | {ms(t)} | {t / j:.2f} | {B * frames / j / (cores if per_core else 1):.0f} |")
    p = len(members)
    print("\n| `melapc_3x128` population | ms per step | sequential / population |")
    print("| --- | --- | --- |")
    print(f"| {p} members, one vmapped step | {ms(j_pop)} | {p * j_one / j_pop:.2f} |")
    print(f"| {p} members, {p} steps of one | {ms(p * j_one)} | 1.00 |")


if __name__ == "__main__":
    sys.exit(main())
