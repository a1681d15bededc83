"""The phone set: the one place that maps any phone symbol onto the package's labels.

Label set: the 39 phonemes of the CMU Pronouncing Dictionary's ARPAbet (lower case, lexical
stress removed) plus ``sil`` = 40 labels. Synthesizers (flite, festival), pocketsphinx,
Montreal Forced Aligner's English ARPAbet models and CMUdict all speak this set.

Foldings (applied after lower-casing and stripping the stress digit, ``AH0 -> ah``):

* silence and pauses -> ``sil``: ``pau``, ``sil``, ``sp``, ``h#``, ``epi``, ``<sil>``, ``""``
  (MFA leaves the pause intervals of its phone tier empty), and TIMIT's stop closures
  ``bcl dcl gcl pcl tcl kcl`` (as in Lee & Hon 1989, the usual 61 -> 39 TIMIT folding);
* TIMIT 61 -> this set, Lee & Hon's foldings: ``ax ax-h -> ah``, ``axr -> er``, ``ix -> ih``,
  ``ux -> uw``, ``el -> l``, ``em -> m``, ``en nx -> n``, ``eng -> ng``, ``hv -> hh``.
  Two differ from Lee & Hon because CMUdict keeps them apart: ``ao`` and ``zh`` stay phonemes
  (Lee & Hon merge them into ``aa``/``sh``); the flap ``dx`` (not a CMUdict phoneme) -> ``t``.
* symbols that name no phone are *unlabelled* (:data:`UNLABELLED`, mapped to ``None``; their
  frames get ``frames.IGNORE``): TIMIT's glottal stop ``q`` (Lee & Hon delete it), MFA's
  spoken-noise ``spn``, and noise fillers such as ``+nsn+``/``+spn+``/``+breath+``.

Any other symbol raises :class:`UnknownPhoneError` naming it: nothing is mapped silently.
"""

from __future__ import annotations

import re
from typing import Optional

SILENCE = "sil"

PHONEMES = (
    "aa", "ae", "ah", "ao", "aw", "ay", "b", "ch", "d", "dh", "eh", "er", "ey", "f", "g",
    "hh", "ih", "iy", "jh", "k", "l", "m", "n", "ng", "ow", "oy", "p", "r", "s", "sh", "t",
    "th", "uh", "uw", "v", "w", "y", "z", "zh",
)
assert len(PHONEMES) == 39

# Label order: the 39 phonemes, then silence. Ids are indices into this tuple.
PHONE_SET = PHONEMES + (SILENCE,)
PHONE_TO_ID = {p: i for i, p in enumerate(PHONE_SET)}

VOWELS = frozenset({"aa", "ae", "ah", "ao", "aw", "ay", "eh", "er", "ey", "ih", "iy", "ow",
                    "oy", "uh", "uw"})

_SILENCE_SYMBOLS = frozenset({
    "sil", "pau", "sp", "h#", "epi", "<sil>", "", "silence",
    "bcl", "dcl", "gcl", "pcl", "tcl", "kcl",
})
_FOLD = {
    "ax": "ah", "ax-h": "ah", "axh": "ah", "axr": "er", "ix": "ih", "ux": "uw", "el": "l",
    "em": "m", "en": "n", "nx": "n", "eng": "ng", "hv": "hh", "dx": "t",
}
UNLABELLED = frozenset({"q", "spn", "+nsn+", "+spn+", "+breath+", "+cough+", "+noise+",
                        "+laugh+", "+um+", "+uh+", "<unk>", "nsn", "<s>", "</s>"})

_STRESS = re.compile(r"^([a-z]+)[012]$")


class UnknownPhoneError(ValueError):
    """A phone symbol that is neither in the set, nor a known folding, nor unlabelled."""


def normalize_phone(symbol: str, *, source: str = "") -> Optional[str]:
    """Maps one phone symbol to the label set -> a member of :data:`PHONE_SET`, or ``None``.

    ``None`` means "no phone label" (see :data:`UNLABELLED`): the caller keeps the segment's
    frames unlabelled. ``source`` (a file name) goes into the error for unknown symbols.
    """
    s = symbol.strip().lower()
    m = _STRESS.match(s)
    if m:
        s = m.group(1)
    if s in PHONE_TO_ID:
        return s
    if s in _SILENCE_SYMBOLS:
        return SILENCE
    if s in _FOLD:
        return _FOLD[s]
    if s in UNLABELLED:
        return None
    where = f"{source}: " if source else ""
    raise UnknownPhoneError(
        f"{where}unknown phone symbol {symbol!r}; expected an ARPAbet phone (CMUdict 39, stress "
        f"digits allowed), a TIMIT-61 symbol, or a silence/noise marker")

