"""The ``speechmi`` command.

    speechmi demo [--out DIR] [--smoke]        the README's main job, on the bundled corpus
    speechmi run CONFIG.py [--out DIR] [--set key=value ...]
    speechmi report RUN_DIR                    rewrite report.md and plots from results.json
    speechmi compare RUN_A RUN_B [--tolerance T]
                                               every record of two runs side by side (exit 1
                                               if any differs)
    speechmi pretrain CONFIG [--smoke] [--out DIR] [--set key=value ...]
                                               self-supervised pretraining (speechmi_jax/ssl)

A run directory holds ``results.json``, ``results.csv``, ``report.md``, PNG plots, the
feature cache and estimator checkpoints; running the same command again resumes where it
stopped.

Expected errors (a bad config, file, corpus or checkpoint, a run folder in use) print one line
and exit with status 1 (2 for a bad config); ``--debug`` shows the traceback instead.

Several processes (hosts) run one command together with ``--coordinator HOST:PORT
--num-processes N --process-id I`` (or ``SPEECHMI_COORDINATOR`` / ``SPEECHMI_NUM_PROCESSES`` /
``SPEECHMI_PROCESS_ID``), or ``--distributed auto`` on TPU pod slices, SLURM and Open MPI
(``distributed.py``; README, "Running on many hosts").

One process writes a run folder at a time: a second ``run`` / ``demo`` / ``pretrain`` on a
folder in use stops at once naming the holder, or waits for it with ``--wait``. Ctrl-C or
SIGTERM stops a run at the next step boundary with its checkpoint saved, prints the command
that resumes it and exits with 130 (SIGINT) or 143 (SIGTERM); a second Ctrl-C stops at once.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


from speechmi_jax import distributed, measures, pipeline, zoo
from speechmi_jax.analysis import report, results
from speechmi_jax.configs import arg as config_arg
from speechmi_jax.configs import demo
from speechmi_jax.configs.base import ConfigError
from speechmi_jax.configs.loader import load_config
from speechmi_jax.encoders.registry import available_encoders, claimed
from speechmi_jax.interrupt import Interrupted
from speechmi_jax.ssl import table1
from speechmi_jax.ssl.trainer import pretrain_command

# What a user's input can cause (bad files, names, values): one line, no traceback.
EXPECTED_ERRORS = (ValueError, OSError, KeyError, ImportError, ArithmeticError)


def build_parser() -> argparse.ArgumentParser:
    """The ``speechmi`` command line: demo, run, report, compare, pretrain, encoders."""
    parser = argparse.ArgumentParser(prog="speechmi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of one line")
    writes = argparse.ArgumentParser(add_help=False)
    writes.add_argument("--wait", action="store_true",
                        help="if another process holds the run folder, wait for it to finish "
                             "(default: stop at once, naming it)")
    distributed.add_arguments(writes)
    p_demo = sub.add_parser("demo", parents=[common, writes],
                            help="all measures for every layer on the bundled corpus")
    p_demo.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    p_demo.add_argument("--smoke", action="store_true",
                        help="tiny settings for a quick check (minutes -> seconds)")
    p_demo.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value")

    p_run = sub.add_parser("run", parents=[common, writes],
                           help="run an experiment config (a Python file with get_config())",
                           description=run_description())
    p_run.add_argument("config", help="a Python file whose get_config(arg) returns the run's "
                                      "config (configs/base.py)")
    p_run.add_argument("--out", default=None, help="run directory (default runs/<config name>)")
    p_run.add_argument("--smoke", action="store_true", help="the config's small settings")
    p_run.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a config value")

    p_rep = sub.add_parser("report", parents=[common],
                           help="rewrite report.md and plots from a run's results.json")
    p_rep.add_argument("run_dir")

    p_cmp = sub.add_parser("compare", parents=[common],
                           help="compare every record of two runs (exit 0 if all are equal)")
    p_cmp.add_argument("run_a", help="a run folder or its results.json / results.csv")
    p_cmp.add_argument("run_b")
    p_cmp.add_argument("--tolerance", type=float, default=0.0,
                       help="largest difference of two numbers counted as equal (default 0: "
                            "bit-identical)")

    p_pre = sub.add_parser("pretrain", parents=[common, writes], help="self-supervised pretraining "
                           f"(objectives: {', '.join(table1.names())})")
    p_pre.add_argument("config", help="a config file, an objective's config in "
                                      "speechmi_jax/configs/pretrain/ by name, or zoo/<recipe> (the "
                                      "zoo's models, speechmi_jax/configs/zoo/)")
    p_pre.add_argument("--out", default=None, help="run directory (default runs/pretrain-<config name>)")
    p_pre.add_argument("--smoke", action="store_true", help="the config's small settings")
    p_pre.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a config value")

    sub.add_parser("encoders", help="list every built-in encoder name (baselines, Whisper, random "
                   "controls, the model zoo and its checkpoints)")
    return parser


def run_description() -> str:
    """``speechmi run --help``'s text: the measures and the encoder model types registered when
    the parser is built (a config file may import plug-ins that register more)."""
    return (f"Runs every encoder x measure of a config. Measures: "
            f"{', '.join(measures.REGISTRY)}. Encoders: a built-in name (`speechmi encoders`) or "
            f"a model folder whose config.json model_type is one of "
            f"{', '.join(claimed('model_types'))}.")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "encoders":
        for name in available_encoders():
            base = name.partition("@")[0]
            note = f"  (step {zoo.steps(base)[-1]}, final)" if name in zoo.names() else ""
            print(name + note)
        return 0
    try:
        if args.command == "compare":
            return _compare(args.run_a, args.run_b, args.tolerance)
        if args.command != "report":
            distributed.start(distributed.launch_from(args))
        if args.command == "pretrain":
            return pretrain_command(args.config, args.out, args.smoke, args.overrides,
                                    wait=args.wait)
        if args.command == "report":
            run_dir = Path(args.run_dir)
            recs = results.read_results(run_dir / "results.json")
            report.write_report(recs, run_dir)
            print(f"wrote {run_dir / 'report.md'}")
            return 0
        config_path = demo.__file__ if args.command == "demo" else args.config
        config = load_config(config_path, args.overrides, arg=config_arg.from_flag(args.smoke))
        out = Path(args.out or Path("runs") / Path(config_path).stem)
        pipeline.run_experiment(config, out, wait=args.wait)
        print(f"results in {out}/ (report.md, results.json, results.csv, *.png)")
        return 0
    except ConfigError as e:
        if args.debug:
            raise
        print(f"speechmi: config error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"speechmi: {e}, with what it had done saved; to resume, run the same command "
              f"again: "
              f"{_command(argv)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"speechmi: stopped at once (Ctrl-C twice); the same command resumes from the last "
              f"checkpoint: {_command(argv)}", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as e:
        if args.debug:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"speechmi: error: {type(e).__name__}: {msg} (--debug shows the traceback)",
              file=sys.stderr)
        return 1


def _compare(run_a: str, run_b: str, tolerance: float) -> int:
    comparison = results.compare_results(results.read_results(run_a), results.read_results(run_b),
                                         tolerance)
    print("\n".join(comparison.lines()))
    return 0 if comparison.identical else 1


def _command(argv) -> str:
    """The command line that ran (to repeat it)."""
    return shlex.join(["speechmi", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
