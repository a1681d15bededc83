"""Self-supervised speech objectives as mutual-information bounds.

Every objective bounds I(view_ctx; Z_target) >= H(Z_target) - E[-log p_psi(Z_target | view_ctx)]
(the SSL section of the design brief). Building blocks:

    masking    wav2vec 2.0 / HuBERT span masking of real frames
    quantizer  Gumbel-softmax vector quantizers (VQ-APC's single codebook, wav2vec 2.0's product
               quantizer with its diversity loss)
    synthetic  sources with known answers: a stationary Gaussian VAR(1) process (closed-form
               I(past; x_{t+n})) and a hidden-Markov source (known state entropy)
    objectives APC, HuBERT-style MLM and data2vec losses, each with its bound in bits
    models     tasks binding the product's encoders, heads and objectives (APC/VQ-APC, HuBERT,
               data2vec) as pure functions; export to config.json + model.safetensors
    data       any Corpus as random crops with lengths, batches a function of (seed, step);
               k-means cluster targets
    trainer    the population trainer behind ``speechmi pretrain``
"""
