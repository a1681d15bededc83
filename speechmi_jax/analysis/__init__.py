"""Analysis of a run: the results schema, correlations between measures, report and plots.

    from speechmi_jax.analysis import results, correlation, report
    res = results.read_results("runs/demo")          # results.json -> Results
    report.write_report(res, "runs/demo")            # report.md + layers.png + scatter_*.png
"""
