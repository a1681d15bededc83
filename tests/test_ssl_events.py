"""The pretraining curves' TensorBoard event files: written without importing PyTorch, a resumed
run's file kept apart from the interrupted one's even when both open in the same second, and
read back as TensorBoard reads them (points logged after the resume step dropped)."""

import subprocess
import sys

from xla_env import child_env  # tests/xla_env.py

SCRIPT = """
import sys
from speechmi_jax.ssl.events import EventWriter, read_scalars
out = sys.argv[1]
w = EventWriter(out)  # a run that logged steps 0, 10, 20, then was killed
for step in (0, 10, 20):
    w.write({"step": step, "train_loss": 1.0 - step / 100, "dev_loss": 2.0 - step / 100, "note": "x"})
w.close()
w = EventWriter(out, purge_step=10)  # resumed from its step-10 checkpoint, the same second
for step in (10, 20):
    w.write({"step": step, "train_loss": 0.5 - step / 100, "dev_loss": 1.5 - step / 100})
w.close()
print(sys.modules.get("torch", "absent"))  # neither imported nor left blocked
print(sorted((tag, [(s, round(v, 6)) for s, v, _ in pts]) for tag, pts in read_scalars(out).items()))
"""


def test_curves_are_written_without_torch_and_read_back_as_tensorboard_resumes_them(tmp_path):
    # torch is installed here (test extra): tensorboardX's writer would import it (~2 s, ~190 MB
    # in every pretraining process) unless events.py keeps it out.
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=child_env(),
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "absent", out
    assert out[1] == str([("dev/loss", [(0, 2.0), (10, 1.4), (20, 1.3)]),
                          ("train/loss", [(0, 1.0), (10, 0.4), (20, 0.3)])]), out
