"""The zoo's quality floor table from runs of experiments/configs/zoo_quality_bundled.py.

    python experiments/zoo_floor.py runs/zoo_quality/results.json [more results.json ...]

Per zoo model: its best layer's phone MI with the 95% CI, its random-init control's
(``<name>@step0``) best layer, and whether the CIs do not overlap those of log-mel and of the
control (the model's lower end above their upper end).
"""
import json
import sys

recs = [r for f in sys.argv[1:] for r in json.load(open(f))["records"] if r["measure"] == "phone_mi"]
best = {}
for r in recs:
    if r["encoder"] not in best or r["value"] > best[r["encoder"]]["value"]:
        best[r["encoder"]] = r
lm = best["logmel"]
print("| model | best layer | phone MI (bits) [95% CI] | random-init control (`@step0`), its best layer | beats log-mel | beats control |")
print("| --- | --- | --- | --- | --- | --- |")
for n, r in best.items():
    if "@" in n or n == "logmel":
        continue
    c = best[f"{n}@step0"]
    fmt = lambda x: f"{x['value']:.3f} [{x['ci'][0]:.3f}, {x['ci'][1]:.3f}]"
    print(f"| `{n}` | {r['layer']} | {fmt(r)} | {fmt(c)}, layer {c['layer']} | "
          f"{'yes' if r['ci'][0] > lm['ci'][1] else 'no'} | {'yes' if r['ci'][0] > c['ci'][1] else 'no'} |")
print(f"| `logmel` | - | {lm['value']:.3f} [{lm['ci'][0]:.3f}, {lm['ci'][1]:.3f}] | | | |")
