"""Pretraining configs, one per objective: ``speechmi pretrain <name or path> [--smoke]``."""
