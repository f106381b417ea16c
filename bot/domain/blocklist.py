"""Words and phrases a server keeps out of prompts, matched the way a reader sees them, not byte for byte.

Both the phrase and the prompt are brought to one form before they are compared: compatibility forms
folded (full-width letters, ligatures), invisible format characters removed (zero-width spaces and joiners,
soft hyphens), case folded and accents stripped. A phrase matches whole words only, so a word that merely
contains a blocked one is not caught; punctuation put inside a word to split it ("b.a.d", "b-a-d") is seen
through by reading each run of non-blank characters also with its punctuation taken out.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

# Runs of letters and digits: the words a prompt is made of.
_WORD = re.compile(r"[^\W_]+")
_BLANK = re.compile(r"\s+")


def fold(text: str) -> str:
    """Bring text to the form phrases are matched in."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(char for char in text if unicodedata.category(char) != "Cf")
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(char for char in text if not unicodedata.combining(char))
    return unicodedata.normalize("NFC", text)


def words_of(text: str) -> tuple[str, ...]:
    """Split folded text into its words."""
    return tuple(_WORD.findall(text))


def phrase_key(phrase: str) -> str:
    """Return the form a phrase is kept and matched in: its words, one space apart ("" when it has none)."""
    return " ".join(words_of(fold(phrase)))


def split_phrases(written: str) -> list[str]:
    """Split what an admin typed into phrases: commas or new lines separate them."""
    return [part.strip() for part in re.split(r"[,\n]", written) if part.strip()]


def contains_blocked(text: str, phrases: Iterable[str]) -> bool:
    """Tell whether the text contains any of the phrases (given as phrase keys) as whole words."""
    keys = [tuple(key.split(" ")) for key in phrases if key]
    if not keys:
        return False
    folded = fold(text)
    # Read twice: split at every non-letter, and with the punctuation inside each blank-separated run
    # removed, which joins "b.a.d" back into "bad".
    plain = words_of(folded)
    joined = tuple(word for run in _BLANK.split(folded) if (word := "".join(words_of(run))))
    return any(_has_run(stream, key) for key in keys for stream in (plain, joined))


def _has_run(words: Sequence[str], phrase: Sequence[str]) -> bool:
    size = len(phrase)
    return any(tuple(words[start : start + size]) == tuple(phrase) for start in range(len(words) - size + 1))
