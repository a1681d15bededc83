"""The Colab notebooks, executed end to end on the CPU with their SMOKE settings.

A notebook kernel is a new process: it runs this venv's python (a kernelspec written to a temp
dir) and inherits this process' environment, which carries the 8 simulated CPU devices (one for
the quickstart) and the shared XLA compilation cache of tests/conftest.py, the smoke switch, the
output folder and ``SPEECHMI_SKIP_INSTALL=1`` (the install cells never run here).
"""

import importlib.util
import json
import math
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from run_checks import check_run  # tests/run_checks.py
from xla_env import xla_flags  # tests/xla_env.py

ROOT = Path(__file__).resolve().parents[1]
COLAB = ROOT / "colab"
NOTEBOOKS = ("quickstart", "tpu_sweep")


def read_notebook(name: str):
    return nbformat.read(COLAB / f"{name}.ipynb", as_version=4)


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A kernelspec for this interpreter, and the environment every notebook kernel gets."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "speechmi-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "speechmi test", "language": "python"}))
    for key, value in {"JUPYTER_PATH": str(tmp_path / "jupyter"), "SPEECHMI_SMOKE": "1",
                       "SPEECHMI_SKIP_INSTALL": "1", "SPEECHMI_OUT": str(tmp_path / "out"),
                       "TQDM_DISABLE": "1"}.items():
        monkeypatch.setenv(key, value)
    return tmp_path / "out"


def execute(name: str):
    nb = read_notebook(name)
    client = NotebookClient(nb, kernel_name="speechmi-test", timeout=900,
                            resources={"metadata": {"path": str(COLAB)}})
    client.execute()
    return nb


def outputs_text(nb) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def output_types(nb) -> set:
    return {mime for c in nb.cells if c.cell_type == "code" for o in c.outputs
            for mime in o.get("data", {})}


def check_results(out: Path, expected_layers: dict, measures):
    doc = json.loads((out / "results.json").read_text())
    found = {(r["encoder"], r["layer"], r["measure"]) for r in doc["records"]}
    expected = {(e, layer, m) for e, n in expected_layers.items() for layer in range(n) for m in measures}
    assert found == expected
    assert all(math.isfinite(r["value"]) for r in doc["records"])
    assert (out / "report.md").is_file()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_are_clean_and_guard_their_installs(name):
    nb = read_notebook(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), "outputs not cleared"
    installs = [c for c in code if "\"pip\", \"install\"" in c.source]
    assert installs and all('os.environ.get("SPEECHMI_SKIP_INSTALL") != "1"' in c.source
                            for c in installs)
    assert any("SMOKE" in c.source for c in code)


def test_quickstart_runs_end_to_end(kernel_env, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", xla_flags(1))  # the sharded notebook is the next test's
    nb = execute("quickstart")
    text = outputs_text(nb)
    assert "CpuDevice" in text and "660 utterances" in text
    assert {"text/markdown", "image/png"} <= output_types(nb)  # the table and the plot
    check_results(kernel_env, {"whisper-tiny.en": 5},
                  ("phone_mi", "phone_acc", "infonce_next_k", "ctc_per"))


def test_tpu_sweep_runs_sharded_over_8_devices(kernel_env, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("speechmi_tiny_checkpoints",
                                                  ROOT / "experiments" / "tiny_checkpoints.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    # The four base-style families and a pre-LN ("stable layer norm") large-style WavLM: the
    # large experiment's config is this one with other encoders (test_experiments.py), so its
    # smoke run is this one's with pre-LN encoders; same shapes, so no extra compilation.
    encoders = (tiny.write_tiny_checkpoints(tmp_path / "tiny")
                + tiny.write_tiny_checkpoints(tmp_path / "tiny", ("wavlm",), large=True))
    monkeypatch.setenv("SPEECHMI_ENCODERS", json.dumps(encoders))
    nb = execute("tpu_sweep")
    text = outputs_text(nb)
    assert "8 x cpu (cpu)" in text and "mesh: {'data': 8, 'probe': 1}" in text
    assert {"text/markdown", "image/png"} <= output_types(nb)
    config = json.loads((kernel_env / "config.json").read_text())
    assert config["probe"]["mesh_shape"] == [8, 1] and config["corpus"] == "bundled"
    # The smoke run of experiments/configs/ssl_base_librispeech.py (the notebook's config): every
    # record present, finite and inside its ceiling, as test_experiments.py checks the others;
    # the pre-LN model's last hidden state includes the encoder's final LayerNorm.
    assert config["measures"] == ["phone", "infonce_next_k", "infonce_input", "ctc"]
    check_run(kernel_env, encoders, config["measures"])
