"""The zoo's log-mel transformer (encoders/logmel_transformer.py), causal (APC) and bidirectional
(masked prediction): frame t of the causal one never sees later frames; the bidirectional one
does; an utterance gets the same hidden states alone and in a padded batch; both round-trip
through config.json + model.safetensors and ``smi.load_encoder`` (with the mask embedding the
masking hook then uses); the earlier causal-only format still loads; a damaged file is refused
with the key named; the ``logmel-stack4`` baseline is log-mel with its +-4 neighbours and
``logmel-past8`` with the 8 frames before; the positional conv's own gradient is the
convolution's."""

import json

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import speechmi_jax as smi
from speechmi_jax.encoders import checkpoint
from speechmi_jax.encoders import logmel_transformer as lmt

RNG = np.random.default_rng(0)
WAV = RNG.standard_normal((2, 8000)).astype(np.float32)


def _save(tmp_path, causal, stack=2, mask_embedding=None):
    arch = lmt.MelArch(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, causal=causal,
                       stack=stack)
    params = lmt.init_params(arch, jax.random.PRNGKey(0))
    lmt.save(arch, params, tmp_path / f"m{causal}{stack}", mask_embedding=mask_embedding)
    return arch, params, smi.load_encoder(tmp_path / f"m{causal}{stack}")


@pytest.mark.parametrize("causal", [True, False])
def test_causality_padding_invariance_and_round_trip(tmp_path, causal):
    arch, params, enc = _save(tmp_path, causal)
    assert (enc.num_layers, enc.hidden_size, enc.frame_rate, enc.frame_offset_s) == (2, 32, 50.0, 0.005)
    assert list(enc.num_frames([8000, 5000, 1])) == [25, 16, 1]
    # Halve the tail. (The log-mel's 80 dB floor is set by the utterance's loudest bin, the one
    # non-causal statistic; on white noise no bin sits at that floor, so earlier frames keep.)
    x, y = WAV[:1], WAV[:1].copy()
    y[0, 6000:] *= 0.5
    hx, hy = (np.asarray(enc(v, [8000]).hidden_states) for v in (x, y))
    first_touched = (6000 - 200) // 160 // 2  # model frame i stacks log-mel frames 2i, 2i + 1
    early = np.abs(hx[:, :, :first_touched] - hy[:, :, :first_touched]).max()
    late = np.abs(hx[:, :, first_touched + 1:] - hy[:, :, first_touched + 1:]).max()
    assert late > 1e-3
    if causal:
        assert early < 1e-5
    else:  # bidirectional: the future reaches every frame of the last layer
        assert np.abs(hx[-1, :, :first_touched] - hy[-1, :, :first_touched]).max(-1).min() > 1e-4
    # Padding invariance: utterance 1 (5000 samples) alone and padded to 8000 in a batch.
    batch = np.asarray(enc(WAV, [8000, 5000]).hidden_states)
    alone = np.asarray(enc(WAV[1:, :5000], [5000]).hidden_states)
    np.testing.assert_allclose(batch[:, 1, :alone.shape[2]], alone[:, 0], atol=1e-5)
    # The reloaded encoder computes what the module does with the saved parameters.
    out = lmt.LogMelTransformer(arch).apply({"params": params}, x, np.array([8000]))
    np.testing.assert_allclose(np.asarray(out.hidden_states), hx, atol=1e-6)


def test_mask_embedding_round_trips_and_drives_the_masking_hook(tmp_path):
    emb = RNG.standard_normal(32).astype(np.float32)
    arch, params, enc = _save(tmp_path, causal=False, mask_embedding=emb)
    np.testing.assert_array_equal(np.asarray(enc.mask_params[lmt.MASK_EMBEDDING]), emb)
    frame_mask = np.zeros((2, 25), bool)
    frame_mask[:, 5:10] = True  # model frames 5..9 = log-mel frames 10..19
    lengths = np.array([8000, 8000])
    masked = np.asarray(enc.apply_masked(WAV, lengths, frame_mask).hidden_states)
    want = lmt.LogMelTransformer(arch).apply({"params": params}, WAV, lengths, frame_mask, emb)
    np.testing.assert_allclose(masked, np.asarray(want.hidden_states), atol=1e-6)
    # Audio only under masked frames (samples 1640..2799 reach log-mel frames 10..18 only)
    # changes nothing when masked, with the embedding (MLM) or the constant log-mel (APC).
    other = WAV.copy()
    other[:, 1640:2800] *= 0.9
    _, _, apc = _save(tmp_path, causal=True)
    assert apc.mask_params is None
    for e in (enc, apc):
        a, b = (np.asarray(e.apply_masked(w, lengths, frame_mask).hidden_states) for w in (WAV, other))
        np.testing.assert_allclose(a, b, atol=1e-5)
        clean_a, clean_b = (np.asarray(e(w, lengths).hidden_states) for w in (WAV, other))
        assert np.abs(clean_a - clean_b).max() > 1e-3  # unmasked, the change shows


def test_legacy_causal_format_loads_as_100hz_causal(tmp_path):
    arch, params, _ = _save(tmp_path, causal=True, stack=1)
    folder = tmp_path / "mTrue1"
    cfg = json.loads((folder / "config.json").read_text())
    legacy = {k: v for k, v in cfg.items() if k not in ("causal", "stack")}
    legacy["model_type"] = lmt.LEGACY_CAUSAL_MODEL_TYPE
    (folder / "config.json").write_text(json.dumps(legacy))
    enc = smi.load_encoder(folder)
    assert enc.frame_rate == 100.0 and enc.frame_offset_s == 0.0
    out = lmt.LogMelTransformer(arch).apply({"params": params}, WAV, np.array([8000, 8000]))
    np.testing.assert_allclose(np.asarray(enc(WAV, [8000, 8000]).hidden_states),
                               np.asarray(out.hidden_states), atol=1e-6)


def test_damaged_weights_and_config_are_refused_by_name(tmp_path):
    _save(tmp_path, causal=False)
    folder = tmp_path / "mFalse2"
    state = load_file(folder / "model.safetensors")
    missing = sorted(state)[0]
    del state[missing]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(checkpoint.CheckpointError, match=f"missing key '{missing}'"):
        smi.load_encoder(folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(cfg, stack=0)))
    with pytest.raises(ValueError, match="stack=0: expected a positive integer"):
        smi.load_encoder(folder)


@pytest.mark.parametrize("name, offsets", [("logmel-stack4", range(-4, 5)), ("logmel-past8", range(-8, 1))])
def test_context_baselines_are_logmel_with_its_neighbours(name, offsets):
    """logmel-stack4: frames t - 4 .. t + 4; logmel-past8 (a causal model's floor): t - 8 .. t."""
    stacked = smi.load_encoder(name)
    logmel = smi.load_encoder("logmel")
    s = np.asarray(stacked(WAV, [8000, 5000]).hidden_states[0])  # [B, T, 720]
    x = np.asarray(logmel(WAV, [8000, 5000]).hidden_states[0])  # [B, T, 80], zero past the end
    assert s.shape == (2, 50, 720) and stacked.hidden_size == 720
    for t in (0, 3, 20, 30, 49):
        want = np.concatenate([x[:, t + o] if 0 <= t + o < 50 else np.zeros((2, 80)) for o in offsets], -1)
        np.testing.assert_allclose(s[:, t], want, atol=1e-6)
    alone = np.asarray(stacked(WAV[1:, :5000], [5000]).hidden_states[0])
    np.testing.assert_allclose(s[1, :alone.shape[1]], alone[0], atol=1e-6)


def test_pretrain_config_errors_are_one_line_before_any_work(tmp_path, capsys):
    from speechmi_jax import cli
    for bad, what in [("steps=0", "'steps': 0 is out of range; expected an integer >= 1"),
                      ("objective=foo", "'objective': 'foo'; expected one of"),
                      ("nope=1", "has no key 'nope'"),
                      ("population.lr=[1e-3,1e-4,1e-5]", "one common length")]:
        args = ["pretrain", "apc", "--smoke", "--out", str(tmp_path / "r"), "--set", bad]
        if bad.startswith("population"):
            args += ["--set", "population.seed=[0,1]"]
        assert cli.main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and what in err, err
    assert not (tmp_path / "r").exists()


def test_a_pretraining_folder_of_another_config_is_refused_untouched(tmp_path, capsys):
    """The same check as a ``speechmi run`` folder's (rundir.check_config), before any work."""
    from speechmi_jax import cli
    out = tmp_path / "r"
    out.mkdir()
    (out / "pretrain_config.json").write_text('{"objective": "hubert"}\n')
    assert cli.main(["pretrain", "apc", "--smoke", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{out / 'pretrain_config.json'} holds a different config" in err, err
    assert (out / "pretrain_config.json").read_text() == '{"objective": "hubert"}\n'
    assert [p.name for p in out.iterdir() if p.name != "speechmi.lock"] == ["pretrain_config.json"]


@pytest.mark.parametrize("pad", [(5, 0), (3, 2)])  # causal, centred
def test_positional_conv_gradients_are_the_convolutions(pad):
    """grouped_conv1d's own kernel gradient (a matmul per tap) and its input gradient equal
    autodiff of ``lax.conv_general_dilated`` (rel. 1e-5), alone and vmapped as a population's
    members are; the output is the convolution's."""
    from jax import lax
    import jax.numpy as jnp

    x = jnp.asarray(RNG.standard_normal((2, 3, 7, 8)).astype(np.float32))    # [P, B, T, D]
    k = jnp.asarray(RNG.standard_normal((2, 6, 2, 8)).astype(np.float32))    # [P, K, D/4, D]
    cot = jnp.asarray(RNG.standard_normal((3, 7, 8)).astype(np.float32))
    ref = lambda x, k: lax.conv_general_dilated(x, k, (1,), [pad], dimension_numbers=("NWC", "WIO", "NWC"),
                                                feature_group_count=4)
    ours = lambda x, k: lmt.grouped_conv1d(x, k, pad, 4)
    loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)) * cot)
    np.testing.assert_allclose(ours(x[0], k[0]), ref(x[0], k[0]), rtol=1e-6)
    for xs, ks, grad in ((x[0], k[0], jax.grad), (x, k, lambda f, **kw: jax.vmap(jax.grad(f, **kw)))):
        got, want = (jax.jit(grad(loss(f), argnums=(0, 1)))(xs, ks) for f in (ours, ref))
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(jnp.abs(w).max()))


def test_dropout_drops_in_training_only_and_keeps_the_causal_model_causal():
    """``model.dropout``: in a training step the backbone drops its input (and each layer's
    attention and feed-forward outputs) at that rate; evaluation and every exported or loaded
    encoder compute exactly what a model without dropout does; a causal model stays causal
    under a dropout draw; APC's and HuBERT's training losses see the draw, their dev losses do
    not. Catches: dropout left on at evaluation, the rate not applied, a mask that mixes frames."""
    import jax.numpy as jnp

    from speechmi_jax.ssl import models

    # Everything jitted: one compilation each instead of some 400 eager ones (20 s).
    arch = lmt.MelArch(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, causal=True)
    params = jax.jit(lmt.init_params, static_argnums=0)(arch, jax.random.PRNGKey(0))
    lengths, key = np.array([8000]), jax.random.PRNGKey(1)
    plain = jax.jit(lmt.LogMelTransformer(arch).apply)({"params": params}, WAV[:1], lengths).hidden_states
    dropped = jax.jit(lmt.LogMelTransformer(arch, dropout=0.3).apply)
    trained = lambda w: np.asarray(dropped({"params": params}, w, lengths, rngs={"dropout": key}).hidden_states)
    hx = trained(WAV[:1])
    # The input dropout zeroes 30 % of hidden_states[0] (6400 entries: 0.3 +- 0.02 at 3.5 sigma).
    assert 0.28 < float((hx[0] == 0).mean()) < 0.32
    assert float((np.asarray(plain[0]) == 0).mean()) < 0.01
    assert np.abs(hx[1:] - np.asarray(plain[1:])).min(axis=-1).mean() > 1e-3  # every layer moved
    # Causal under dropout: the same draw, a changed tail, earlier frames untouched.
    y = WAV[:1].copy()
    y[0, 6000:] *= 0.5
    first_touched = (6000 - 200) // 160 // 2
    assert np.abs(hx[:, :, :first_touched] - trained(y)[:, :, :first_touched]).max() < 1e-5
    # Evaluation: the backbone a task builds outside training has no dropout.
    evaluated = jax.jit(models.MelBackbone(arch, dropout=0.3).module().apply)({"params": params}, WAV[:1], lengths)
    np.testing.assert_array_equal(np.asarray(evaluated.hidden_states), np.asarray(plain))

    batch = {"audio": jnp.asarray(WAV), "lengths": jnp.array([8000, 5000]),
             "codes": jnp.asarray(RNG.integers(0, 5, (2, 25)), jnp.int32)}
    bidir = lmt.MelArch(**{**arch.__dict__, "causal": False})
    tasks = [(models.APCTask(arch), models.APCTask(arch, dropout=0.3), {"shift": 2}),
             (models.MaskedTask("hubert", models.MelBackbone(bidir), num_codes=5, mask_span=2),
              models.MaskedTask("hubert", models.MelBackbone(bidir, dropout=0.3), num_codes=5, mask_span=2),
              {"mask_prob": 0.5, "h_target_bits": 2.0})]
    for without, with_dropout, hp in tasks:
        p, aux = jax.jit(without.init)(jax.random.PRNGKey(0))
        loss = lambda task, train, k=key: float(jax.jit(task.loss, static_argnums=5)(p, aux, batch, k, hp, train)[0])
        clean = loss(without, False)
        assert loss(with_dropout, False) == clean == loss(without, True)
        drawn = loss(with_dropout, True)
        assert drawn != clean and drawn != loss(with_dropout, True, jax.random.PRNGKey(2))


def test_dropout_needs_the_logmel_backbone():
    from speechmi_jax.configs.base import ConfigError
    from speechmi_jax.ssl import trainer
    with pytest.raises(ConfigError, match=r"'model.dropout' and 'model.backbone': dropout 0.1 with the "
                                          r"'conv' backbone"):
        trainer.load_pretrain_config("data2vec", ["model.backbone=conv", "model.dropout=0.1"], smoke=True)
    assert trainer.load_pretrain_config("apc", ["model.dropout=0.1"], smoke=True)[1].model.dropout == 0.1
