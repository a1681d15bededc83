"""A run directory: its config, and the saved part of every (encoder, measure).

    <out>/config.json                     the run's config (a directory holds one experiment)
    <out>/parts/<encoder>__<measure>.json one finished measure of one encoder
    <out>/checkpoints/<encoder>/<measure>-<key hash>  estimator bank checkpoints (resume
                                          mid-measure; those of an older key are removed)
    <out>/cache/                          feature caches, keyed by content (features.py)
    <out>/speechmi.lock                   names the process that holds the folder (locks.py)

A part holds its records, its wall time, its **key** and a sha256 **checksum** of both. The key
is what the numbers depend on: the feature cache key of the encoder's features (which hashes
the encoder's weights and the corpus' audio, alignments and splits), the log-mel input's when
the measure uses it, the measure's config settings and :data:`PART_SCHEMA`. A part whose key
differs (the corpus' audio changed, say), whose checksum does not match (edited, or torn by a
crash) or that cannot be read at all is logged, naming the file and the reason, and computed
again: a stale or damaged part is never reused.

One command writes a run folder at a time (:func:`claim`, also for pretraining folders): a
second ``speechmi`` command on it stops at once naming the holder, or waits with ``--wait``.
A command of several processes (``distributed.py``) holds the folder once: process 0 takes
the lock and the others follow its outcome (they are bound to it by ``jax.distributed``: if it
stops, they stop). A lock per process would add nothing (a second command's process 0 is
refused, and with it every process of that command) and would refuse a rerun on another
number of processes. Files written once (``config.json``, the parts) are written by process 0;
every process reads them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Optional

from speechmi_jax import distributed, interrupt, locks

log = logging.getLogger("speechmi_jax.rundir")

# Bump when what a part's records mean changes (record layout, label derivation, estimators).
PART_SCHEMA = "speechmi_jax.part/2"
LOCK_FILE = "speechmi.lock"


@contextlib.contextmanager
def claim(out_dir, *, wait: bool = False):
    """Holds the run folder ``out_dir`` (created if needed) for one writer (``locks.hold`` on
    ``<out>/speechmi.lock``; ``wait``: wait for a holder instead of raising
    ``locks.FolderBusy``), with SIGINT / SIGTERM stopping at a step boundary
    (``interrupt.graceful``)."""
    out = Path(out_dir)
    with contextlib.ExitStack() as held:
        distributed.on_main(lambda: held.enter_context(
            locks.hold(out / LOCK_FILE, what=f"run folder {out}", wait=wait)),
            f"holding the run folder {out}")
        with interrupt.graceful():
            yield out


def _checksum(doc: dict) -> str:
    # A part's own digest over its JSON (key, records, seconds); checkpoint files are listed
    # and verified by training.py, a different thing (files on disk, not a document).
    body = {k: v for k, v in doc.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode()).hexdigest()


def with_defaults(stored, defaults):
    """``stored`` (a config or key as JSON data) with every key it lacks taken from ``defaults``
    (nested dicts merged; other values kept as stored)."""
    if not (isinstance(stored, dict) and isinstance(defaults, dict)):
        return stored
    return {**defaults, **{k: with_defaults(v, defaults.get(k)) for k, v in stored.items()}}


def written_before_new_keys(stored, current, defaults) -> bool:
    """Whether ``stored`` (a run's config, or a part's key, as the older code wrote it) is
    ``current`` but for keys added since, which ``current`` gives their ``defaults``: a new
    key's default keeps the old behaviour, so such a run resumes and such a part is reused,
    keeping the identity it was written with."""
    return stored != current and with_defaults(stored, defaults) == current


def resumed_config(cfg_path: Path, config_json: str, defaults_json: str) -> str:
    """The config text a run folder keeps: ``config_json``, or the one ``cfg_path`` holds when
    it was written before config keys were added that ``config_json`` gives their defaults
    (``defaults_json``: the schema's defaults) -- :func:`written_before_new_keys`."""
    if cfg_path.exists():
        stored_text = cfg_path.read_text()
        try:
            stored = json.loads(stored_text)
        except json.JSONDecodeError:
            return config_json  # check_config refuses it, naming the file
        if written_before_new_keys(stored, json.loads(config_json), json.loads(defaults_json)):
            log.info("%s was written before config keys were added; they take their defaults",
                     cfg_path)
            return stored_text
    return config_json


def check_config(cfg_path: Path, config_json: str) -> None:
    """Raises ValueError if ``cfg_path`` holds another config than ``config_json``: the folder
    belongs to another run (a ``speechmi run`` experiment or a pretraining run)."""
    if cfg_path.exists() and cfg_path.read_text() != config_json:
        raise ValueError(
            f"{cfg_path} holds a different config: this folder belongs to another run. Use a "
            f"new --out, or delete {cfg_path.parent} to start over.")


def write_config(cfg_path: Path, config_json: str) -> None:
    """Writes the run's config once (atomically: a crash leaves no torn file)."""
    if not cfg_path.exists():
        tmp = cfg_path.with_suffix(".json.tmp")
        tmp.write_text(config_json)
        tmp.replace(cfg_path)


def _write_config(out: Path, config_json: str):
    check_config(out / "config.json", config_json)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    write_config(out / "config.json", config_json)


class RunDir:
    """One run directory (see the module docstring)."""

    def __init__(self, out_dir, config_json: str):
        """Claims ``out_dir`` for the config serialised as ``config_json`` (validate first:
        a refused config must not be written). Raises ValueError if the directory holds
        another config (process 0 checks and writes it; ``distributed.on_main``)."""
        self.out = Path(out_dir)
        self.parts = self.out / "parts"
        distributed.on_main(lambda: _write_config(self.out, config_json),
                            f"writing {self.out / 'config.json'}")

    def part_path(self, encoder_file: str, measure: str) -> Path:
        return self.parts / f"{encoder_file}__{measure}.json"

    def checkpoint_dir(self, encoder_file: str, measure: str, key: dict) -> str:
        """Where the measure's bank checkpoints for ``key``; checkpoints of other keys (stale
        inputs) are deleted."""
        folder = (self.out / "checkpoints" / encoder_file).resolve()
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        here = folder / f"{measure}-{digest}"
        if folder.is_dir() and distributed.is_main():
            for old in folder.glob(f"{measure}-*"):
                if old != here:
                    log.info("removing checkpoints of stale inputs %s", old)
                    shutil.rmtree(old, ignore_errors=True)
        return str(here)

    def load_part(self, encoder_file: str, measure: str, key: dict,
                  defaults: Optional[dict] = None) -> Optional[dict]:
        """The saved part if it exists, is intact and was computed for ``key``; else None
        (every reason but "not computed yet" is logged with the file's path). ``defaults``:
        ``key`` as the schema's defaults make it; a part whose key lacks keys added since,
        which ``key`` gives their defaults, is reused (:func:`written_before_new_keys`)."""
        path = self.part_path(encoder_file, measure)
        if not path.exists():
            return None
        why = None
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            why = f"unreadable ({type(e).__name__}: {e})"
        else:
            if not isinstance(doc, dict) or doc.get("sha256") != _checksum(doc):
                why = "checksum mismatch (the file was edited or torn)"
            elif doc.get("key") != key and not (
                    defaults is not None and written_before_new_keys(doc.get("key"), key, defaults)):
                old = doc.get("key") if isinstance(doc.get("key"), dict) else {}
                changed = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
                why = f"computed for other inputs (changed: {', '.join(changed)})"
        if why is not None:
            log.warning("%s: %s; computing it again", path, why)
            return None
        return doc

    def save_part(self, encoder_file: str, measure: str, key: dict, records: list[dict],
                  seconds: float) -> dict:
        """Writes the part (process 0; every process computed the same records) -> its doc."""
        doc = {"key": key, "records": records, "seconds": seconds}
        doc["sha256"] = _checksum(doc)
        if not distributed.is_main():
            return doc
        path = self.part_path(encoder_file, measure)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, allow_nan=False))
        tmp.replace(path)
        return doc
