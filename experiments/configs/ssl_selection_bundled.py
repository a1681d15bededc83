"""Label-free model selection over the SSL zoo: every (model, checkpoint, layer) of the zoo
(the shipped models and, with ``SPEECHMI_ZOO_PATH``, the selection zoo built by
``experiments/build_selection_zoo.py``: 2 families x 2 sizes x 2 seeds x 6 checkpoints, step 0
being each run's random-init control) and log-mel, through the demo's phone probe, its two MI
label-free measures, the rank-based ones (RankMe, alpha-ReQ, LiDAR, PWCCA to log-mel) and
linear-CTC PER, on the bundled corpus.

The report's "SSL model selection" section answers: does the label-free measure's best layer
fall within one layer of the best-PER layer; across (model, checkpoint) points, each at the
layer the label-free measure picks, how do Kendall's tau and Spearman's rho against PER and
phone MI come out (bootstrap CIs, permutation p); does the SSL objective's own logged dev bound
predict them; and the APC vs MLM table with this run's numbers.

    python experiments/build_selection_zoo.py --pretrain-dir "$PRETRAIN_DIR"
    export SPEECHMI_ZOO_PATH=~/.cache/speechmi/selection-zoo/zoo
    speechmi run experiments/configs/ssl_selection_bundled.py --out runs/ssl_selection
    speechmi run experiments/configs/ssl_selection_bundled.py --out runs/ssl_selection_real \
        --set "corpus_options={'domain': 'real'}"
    speechmi run experiments/configs/ssl_selection_bundled.py --smoke --out runs/ssl_selection_smoke
    python experiments/selection_summary.py runs/ssl_selection/results.json \
        --out experiments/results/selection_bundled.json
"""

from speechmi_jax import zoo
from speechmi_jax.configs import arg as config_arg
from speechmi_jax.configs import demo

MEASURES = ["phone", "infonce_next_k_aligned", "codes_next_k", "rankme", "alpha_req", "lidar",
            "cca_logmel", "ctc"]


def distinct_checkpoints() -> list[str]:
    """Every zoo checkpoint, ``<name>@step<N>``, once per distinct weights file (runs that share
    a seed and an architecture share their step 0: it is measured once)."""
    return zoo.distinct(f"{n}@step{s}" for n in zoo.names() for s in zoo.steps(n))


def get_config(arg: str = ""):
    config_arg.is_smoke(arg, "ssl_selection_bundled")
    c = demo.get_config(arg)  # the demo's estimator settings (smoke: its tiny ones), but CTC
    c.encoders = distinct_checkpoints() + ["logmel"]
    # Linear CTC at the two higher rates of the demo's grid: on apc-small@step0 every layer chose
    # 3e-2 at its last step with (1e-3, 3e-3, 3e-2), and the CTC bank is ~70 % of this run's time.
    c.ctc.update(learning_rates=(1e-2, 3e-2), num_steps=600, eval_every=200)
    c.measures = list(MEASURES)
    c.speaker_domain = None
    if arg == "smoke":  # the first and the last checkpoint of every shipped model
        c.encoders = [e for e in distinct_checkpoints()
                      if int(e.rpartition("step")[2]) in (0, zoo.steps(e.partition("@")[0])[-1])]
    return c
