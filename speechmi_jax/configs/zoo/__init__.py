"""The zoo's models, one pretraining config each (``get_config()``): ``speechmi pretrain zoo/<name>``."""
