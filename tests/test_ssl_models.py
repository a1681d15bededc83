"""The causal log-mel encoder (APC's context network): frame t never sees frames after t; it
round-trips through config.json + model.safetensors and ``smi.load_encoder``; a damaged file is
refused with the key named."""

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import speechmi_jax as smi
from speechmi_jax.encoders import checkpoint, wav2vec2


def test_causal_encoder_is_causal_and_round_trips(tmp_path):
    arch = wav2vec2.causal_arch(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    params = wav2vec2.init_causal_params(arch, jax.random.PRNGKey(0))
    wav2vec2.save_causal(arch, params, tmp_path / "m")
    enc = smi.load_encoder(tmp_path / "m")
    assert (enc.num_layers, enc.hidden_size, enc.frame_rate) == (2, 32, 100.0)
    x = np.random.default_rng(0).standard_normal((1, 8000)).astype(np.float32)
    # Halve the tail. (The log-mel's 80 dB floor is set by the utterance's loudest bin, the one
    # non-causal statistic; on white noise no bin sits at that floor, so earlier frames keep.)
    y = x.copy()
    y[0, 6000:] *= 0.5
    hx, hy = (np.asarray(enc(v, [8000]).hidden_states) for v in (x, y))
    first_touched = (6000 - 200) // 160  # frame i's window spans samples i*160 - 200 .. i*160 + 199
    np.testing.assert_allclose(hx[:, :, :first_touched], hy[:, :, :first_touched], atol=1e-5)
    assert np.abs(hx[:, :, first_touched + 1:] - hy[:, :, first_touched + 1:]).max() > 1e-3
    # The reloaded encoder computes what the module does with the saved parameters.
    out, _ = wav2vec2.CausalLogMelEncoder(arch).apply({"params": params}, x, np.array([8000]))
    np.testing.assert_allclose(np.asarray(out.hidden_states), hx, atol=1e-6)

    state = load_file(tmp_path / "m" / "model.safetensors")
    missing = sorted(state)[0]
    del state[missing]
    save_file(state, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(checkpoint.CheckpointError, match=f"missing key '{missing}'"):
        smi.load_encoder(tmp_path / "m")


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
