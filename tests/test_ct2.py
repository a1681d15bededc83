"""CTranslate2 model.bin reader and the CT2 Whisper loader.

References: ctranslate2's own converter (TransformersConverter) writes the same random Whisper
weights as the Hugging Face checkpoint; both must give the same hidden states. A writer that
follows the documented layout (see speechmi_jax/encoders/ct2.py) covers old binary versions,
split files, aliases, bfloat16 and quantized weights, and malformed files.
"""

import struct

import numpy as np
import pytest

import speechmi_jax as smi
from speechmi_jax.encoders import ct2, whisper

TYPE_IDS = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
            np.dtype("float16"): 4}


def _string(s):
    b = s.encode() + b"\0"
    return struct.pack("<H", len(b)) + b


def write_ct2(variables, version=6, aliases=(), spec="TestSpec", bf16=()):
    out = [struct.pack("<I", version)]
    if version >= 2:
        out += [_string(spec), struct.pack("<I", 3)]
    out.append(struct.pack("<I", len(variables)))
    for name, arr in variables.items():
        arr = np.asarray(arr)
        out += [_string(name), struct.pack("<B", arr.ndim), struct.pack(f"<{arr.ndim}I", *arr.shape)]
        if name in bf16:
            raw = (arr.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
            type_id = 5
        else:
            raw, type_id = arr.tobytes(), TYPE_IDS[arr.dtype]
        if version >= 4:
            out += [struct.pack("<BI", type_id, len(raw))]
        else:
            out += [struct.pack("<BI", arr.itemsize, arr.size)]
        out.append(raw)
    if version >= 3:
        out.append(struct.pack("<I", len(aliases)))
        for a, t in aliases:
            out += [_string(a), _string(t)]
    return b"".join(out)


def test_reader_versions_parts_aliases(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    h = rng.standard_normal(5).astype(np.float16)
    bf = np.array([1.0, -2.5, 3.0 * 2.0 ** 16], np.float32)  # exactly representable in bfloat16
    n = np.array(7, np.int16)
    data = write_ct2({"a/w": w, "a/h": h, "b/bf": bf, "n": n}, aliases=[("c/w", "a/w")], bf16={"b/bf"})
    (tmp_path / "m.bin").write_bytes(data)
    m = ct2.read_ct2(tmp_path / "m.bin")
    assert (m.binary_version, m.spec_name, m.spec_revision) == (6, "TestSpec", 3)
    np.testing.assert_array_equal(m.variables["a/w"], w)
    np.testing.assert_array_equal(m.variables["c/w"], w)
    assert m.variables["a/h"].dtype == np.float32
    np.testing.assert_array_equal(m.variables["a/h"], h.astype(np.float32))
    np.testing.assert_array_equal(m.variables["b/bf"], bf)
    assert m.variables["n"].dtype == np.int16 and int(m.variables["n"]) == 7
    # Split in two byte-wise parts at an arbitrary offset, and a filter that skips data.
    cut = 37
    (tmp_path / "p1").write_bytes(data[:cut])
    (tmp_path / "p2").write_bytes(data[cut:])
    m2 = ct2.read_ct2([tmp_path / "p1", tmp_path / "p2"], keep=lambda k: k.startswith("a/"))
    assert sorted(m2.variables) == ["a/h", "a/w"]
    np.testing.assert_array_equal(m2.variables["a/w"], w)
    # Binary version 3 (item size + item count instead of dtype id + byte count).
    (tmp_path / "v3.bin").write_bytes(write_ct2({"a/w": w, "a/h": h}, version=3))
    m3 = ct2.read_ct2(tmp_path / "v3.bin")
    assert m3.binary_version == 3
    np.testing.assert_array_equal(m3.variables["a/h"], h.astype(np.float32))


def test_reader_dequantizes(tmp_path):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)
    q = np.rint(w * scale[:, None]).astype(np.int8)
    s16 = np.float32(2 ** 10 / np.abs(w).max())
    q16 = np.rint(w * s16).astype(np.int16)
    (tmp_path / "q.bin").write_bytes(write_ct2({"w": q, "w_scale": scale, "v": q16, "v_scale": s16}))
    m = ct2.read_ct2(tmp_path / "q.bin")
    assert sorted(m.variables) == ["v", "w"]
    np.testing.assert_allclose(m.variables["w"], w, atol=0.5 / scale.min() + 1e-7)
    np.testing.assert_allclose(m.variables["v"], w, atol=0.5 / s16 + 1e-7)


def test_reader_errors(tmp_path):
    data = write_ct2({"x": np.ones((2, 2), np.float32)})
    (tmp_path / "short.bin").write_bytes(data[:-3])
    with pytest.raises(ct2.CT2FormatError, match="truncated"):
        ct2.read_ct2(tmp_path / "short.bin")
    (tmp_path / "long.bin").write_bytes(data + b"\0")
    with pytest.raises(ct2.CT2FormatError, match="trailing bytes"):
        ct2.read_ct2(tmp_path / "long.bin")
    (tmp_path / "v9.bin").write_bytes(struct.pack("<I", 9) + data[4:])
    with pytest.raises(ct2.CT2FormatError, match="binary version 9"):
        ct2.read_ct2(tmp_path / "v9.bin")
    (tmp_path / "alias.bin").write_bytes(write_ct2({"x": np.ones(2, np.float32)}, aliases=[("y", "z")]))
    with pytest.raises(ct2.CT2FormatError, match="missing variable 'z'"):
        ct2.read_ct2(tmp_path / "alias.bin")


@pytest.fixture(scope="module")
def hf_and_ct2(tmp_path_factory):
    ctranslate2 = pytest.importorskip("ctranslate2")
    torch = pytest.importorskip("torch")
    from whisper_testing import perturbed, tiny_config
    import transformers
    torch.manual_seed(1)
    model = perturbed(transformers.WhisperForConditionalGeneration(
        tiny_config(max_source_positions=100)), seed=1)  # 2 s window
    root = tmp_path_factory.mktemp("ct2")
    model.save_pretrained(root / "hf")
    conv = ctranslate2.converters.TransformersConverter(str(root / "hf"), load_as_float16=False)
    out = {}
    for quant in ("float32", "int8"):
        conv.convert(str(root / quant), quantization=quant, force=True)
        out[quant] = root / quant
    return root / "hf", out


def test_ct2_converter_output_matches_hf(hf_and_ct2):
    hf, ct2_dirs = hf_and_ct2
    rng = np.random.default_rng(3)
    x = (0.1 * rng.standard_normal((2, 30000))).astype(np.float32)
    lengths = np.array([30000, 17000])
    ref_enc = smi.load_encoder(hf)
    ref = np.asarray(ref_enc(x, lengths).hidden_states)
    enc = smi.load_encoder(ct2_dirs["float32"])  # directory with model.bin + CT2 config.json
    assert enc.config.arch == ref_enc.config.arch
    hs = np.asarray(enc(x, lengths).hidden_states)
    np.testing.assert_allclose(hs, ref, atol=1e-5, rtol=0)
    # int8 weights (per-row scales): dequantized, close but not equal.
    q = np.asarray(whisper.load_whisper_ct2(ct2_dirs["int8"] / "model.bin")(x, lengths).hidden_states)
    rel = np.linalg.norm(q - ref) / np.linalg.norm(ref)
    assert 0 < rel < 0.05, rel
