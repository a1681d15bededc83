"""Corpora, phone alignments and the phone set.

* :mod:`~speechmi_jax.data.corpus`: ``load_corpus`` ("bundled", a manifest, TFDS LibriSpeech),
  ``Corpus``, ``Utterance``.
* :mod:`~speechmi_jax.data.phones`: the label set (CMUdict 39 + ``sil``) and every folding.
* :mod:`~speechmi_jax.data.alignments`: TextGrid (MFA), CTM, TIMIT ``.phn``, TSV readers.
* :mod:`~speechmi_jax.data.audio`: reading and soxr resampling.
* :mod:`~speechmi_jax.data.manifest`: TSV/JSON manifests.
* :mod:`~speechmi_jax.data.tfds_librispeech`: LibriSpeech via tensorflow-datasets + MFA.
* :mod:`~speechmi_jax.data.build_bundled`: rebuilds ``bundled/`` from Debian packages.
"""
