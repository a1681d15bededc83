"""Estimator kernels: MI lower bounds in bits, trained as banks of many small estimators at once.

    api        probe_mi / infonce_mi (one representation), probe_bank / infonce_bank (all layers),
               MIEstimate (bits, CI, ceiling, chosen hyper-parameters)
    probe      linear / MLP probe: I(Y; Z) >= H(Y) - CE
    infonce    separable / concat / bilinear critics: I(A; B) >= log K - L_NCE
    views      (a, b, groups) pairs from per-utterance frame sequences
    bank       pure banked step: params [L, P, ...] (layers x grid points), one vmapped update
    train      the loop: mesh + NamedSharding, dev selection, Orbax checkpoints, resume
    bootstrap  percentile intervals resampling groups (utterances)
    validate   input checks with errors that name the array and the expectation
    known      distributions with closed-form / Monte-Carlo MI (tests and benchmarks)
    tasks      known-MI task set ("Beyond Normal" families) with closed-form truths
    spectral   rank-based label-free statistics (RankMe, alpha-ReQ, LiDAR, PWCCA) with their
               influence functions for utterance-bootstrap intervals
    generic    estimate_mi: the generic estimator (Gaussianised marginals, Gaussian + neural
               critic, cross-fitted, held-out InfoNCE over one block of all pairs)
"""
