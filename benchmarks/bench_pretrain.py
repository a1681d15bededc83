"""Pretraining step throughput: JAX vs PyTorch on the same model and loss; a population step vs
P sequential steps. Results go to BENCHMARKS.md ("Pretraining").

* APC: the small causal log-mel transformer of ``configs/pretrain/apc.py`` (log-mel of the raw
  batch, L1 loss at n = 3, AdamW) as the product's jitted train step vs a PyTorch module of the
  same shape and loss (``torch.stft`` log-mel, ``nn.TransformerEncoderLayer`` pre-LN with a causal
  mask).
* MLM: the small HuBERT of ``configs/pretrain/hubert.py`` (span-masked input, softmax over 50
  codes at masked frames) vs transformers' PyTorch ``HubertModel`` of the same config with
  ``mask_time_indices`` and a linear head.
* population: one vmapped APC step of P = 4 members vs 4 steps of one member.

Batch 8 x 1 s at 16 kHz; median of ``--repeats`` steps after warm-up; one process, the machine
as it is (state its load with the numbers). torch is a benchmark-only reference.

    python benchmarks/bench_pretrain.py --repeats 20
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from speechmi_jax.configs.pretrain import apc as apc_cfg, hubert as hubert_cfg
from speechmi_jax.encoders import audio_features as af
from speechmi_jax.ssl import models, trainer
from timing import median_seconds  # benchmarks/timing.py

B, S = 8, 16000


def jax_step_seconds(task, config, members, repeats, batch):
    optim = tuple(sorted((k, v) for k, v in config.optim.to_dict().items() if k != "warmup_steps"))
    shape = trainer.mesh_shape(len(members), B, len(jax.devices()))
    init, step, _ = trainer.compiled(task, optim, shape)
    state = init(jnp.stack([jax.random.PRNGKey(m["seed"]) for m in members]))
    hp = trainer._hp_arrays(members, config)
    box = {"s": state}

    def run():
        box["s"], m = step(box["s"], batch, hp)
        jax.block_until_ready(m)
    return median_seconds(run, repeats)


def torch_apc_seconds(config, repeats, audio):
    import torch
    from torch import nn

    c = dict(config.model.causal)
    d, layers, heads, ff = c["hidden_size"], c["num_layers"], c["num_heads"], c["intermediate_size"]
    mel = torch.tensor(af.mel_filterbank(), dtype=torch.float32)
    window = torch.hann_window(af.N_FFT)

    class APC(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(80, d)
            self.pos = nn.Conv1d(d, d, 8, groups=4)
            self.layers = nn.ModuleList([nn.TransformerEncoderLayer(d, heads, ff, 0.0, "gelu", batch_first=True,
                                                                    norm_first=True) for _ in range(layers)])
            self.norm = nn.LayerNorm(d)
            self.head = nn.Linear(d, 80)

        def forward(self, w):
            spec = torch.stft(w, af.N_FFT, af.HOP, window=window, center=True, return_complex=True)
            lm = torch.log10(torch.clamp(spec.abs().pow(2).transpose(1, 2) @ mel, min=1e-10))
            lm = (torch.maximum(lm, lm.amax(dim=(1, 2), keepdim=True) - 8.0) + 4.0) / 4.0
            x = self.inp(lm)
            x = x + nn.functional.gelu(self.pos(nn.functional.pad(x.transpose(1, 2), (7, 0)))).transpose(1, 2)
            t = x.shape[1]
            causal = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
            for layer in self.layers:
                x = layer(x, src_mask=causal)
            return self.head(self.norm(x)), lm

    model = APC()
    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.01)
    w = torch.tensor(np.asarray(audio))

    def run():
        pred, lm = model(w)
        loss = (pred[:, :-3] - lm[:, 3:].detach()).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return median_seconds(run, repeats)


def torch_mlm_seconds(config, repeats, audio, k):
    import torch
    import transformers

    cfg = transformers.HubertConfig(**{k_: v for k_, v in dict(config.model.hf_config).items() if k_ != "model_type"})
    model = transformers.HubertModel(cfg)
    head = torch.nn.Linear(cfg.hidden_size, k)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), 1e-3, weight_decay=0.01)
    w = torch.tensor(np.asarray(audio))
    t = int(model._get_feat_extract_output_lengths(torch.tensor(S)))
    gen = torch.Generator().manual_seed(0)

    def run():
        masked = torch.rand(B, t, generator=gen) < 0.5
        codes = torch.randint(0, k, (B, t), generator=gen)
        h = model(w, mask_time_indices=masked).last_hidden_state
        loss = torch.nn.functional.cross_entropy(head(h)[masked], codes[masked])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return median_seconds(run, repeats)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    import torch

    cores = os.cpu_count()
    print(f"jax {jax.__version__} on {jax.devices()}, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, {cores} cores, load average {os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(0)
    audio = jnp.asarray(0.1 * rng.standard_normal((B, S)), jnp.float32)
    lengths = jnp.full((B,), S, jnp.int32)

    apc = apc_cfg.get_config()
    apc_task = models.APCTask(models.w2v.causal_arch(**dict(apc.model.causal)))
    one = trainer.population(apc)
    j_apc = jax_step_seconds(apc_task, apc, one, args.repeats, {"audio": audio, "lengths": lengths})
    t_apc = torch_apc_seconds(apc, args.repeats, audio)

    hub = hubert_cfg.get_config()
    k = hub.targets.k
    hub_task = models.MaskedTask("hubert", models.json.dumps(dict(hub.model.hf_config), sort_keys=True),
                                 num_codes=k, h_target_bits=float(np.log2(k)))
    t_frames = int(models.w2v.num_frames(hub_task.arch, np.asarray(S)))
    codes = jnp.asarray(rng.integers(0, k, (B, t_frames)), jnp.int32)
    j_mlm = jax_step_seconds(hub_task, hub, trainer.population(hub), args.repeats,
                             {"audio": audio, "lengths": lengths, "codes": codes})
    t_mlm = torch_mlm_seconds(hub, args.repeats, audio, k)

    p = 4
    apc.population.seed = list(range(p))
    j_pop = jax_step_seconds(apc_task, apc, trainer.population(apc), args.repeats,
                             {"audio": audio, "lengths": lengths})

    print(f"\n| step (batch {B} x 1 s) | JAX ms | PyTorch ms | PyTorch / JAX | JAX frames/s/core |")
    print("| --- | --- | --- | --- | --- |")
    for name, j, t, frames in (("APC (causal, log-mel, 100 Hz)", j_apc, t_apc, 100),
                               ("HuBERT MLM (50 Hz)", j_mlm, t_mlm, t_frames)):
        print(f"| {name} | {1e3 * j:.1f} | {1e3 * t:.1f} | {t / j:.2f} | {B * frames / j / cores:.0f} |")
    print(f"\n| APC population | ms per step | sequential / population |")
    print("| --- | --- | --- |")
    print(f"| {p} members, one vmapped step | {1e3 * j_pop:.1f} | {p * j_apc / j_pop:.2f} |")
    print(f"| {p} members, {p} steps of one | {1e3 * p * j_apc:.1f} | 1.00 |")


if __name__ == "__main__":
    main()
