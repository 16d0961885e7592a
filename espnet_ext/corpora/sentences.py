"""Example sentences from WordNet, normalized into ASR transcripts.

WordNet glosses carry quoted usage examples (`...; "he feared the rallying of their troops"`).
Debian's `wordnet-base` installs them under /usr/share/wordnet (permissive WordNet licence), which
makes them a free, offline source of ~9,000 short English sentences for the synthetic corpus.

A sentence is kept only if a TTS engine will say exactly its transcript: no digits, no symbols
it would spell out ($, %, &, /), no abbreviations with periods, no all-capital acronyms. The
transcript is upper case A-Z, apostrophe and single spaces, 3 to 15 words.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator, List, Optional

from espnet_ext.data.kaldi import PathLike

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_DATA_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")

_QUOTED = re.compile(r'"([^"]+)"')
# Characters a sentence may contain before normalization; anything else (digits, $ % & / + ...)
# would be read out by the TTS engine in a way the transcript cannot predict.
_ALLOWED = re.compile(r"^[A-Za-z '`\-,;:.!?()]+$")
_ACRONYM = re.compile(r"\b[A-Z]{2,}\b")


class SentenceSourceError(FileNotFoundError):
    """The WordNet data files are missing or yield too few sentences."""


def normalize_transcript(sentence: str, min_words: int = 3, max_words: int = 15) -> Optional[str]:
    """Turn one example sentence into an ASR transcript, or None if it should be dropped.

    Args:
        sentence: Raw text, e.g. "hushed-up stories sometimes leak out".
        min_words: Fewest words kept.
        max_words: Most words kept.

    Returns:
        E.g. "HUSHED UP STORIES SOMETIMES LEAK OUT"; None if the sentence has digits, symbols,
        abbreviations or acronyms, or a word count outside [min_words, max_words].
    """
    # Fold accents (cafe for café) so the transcript alphabet stays A-Z.
    text = unicodedata.normalize("NFKD", sentence)
    text = "".join(c for c in text if not unicodedata.combining(c)).strip()
    if not text or not _ALLOWED.match(text) or _ACRONYM.search(text):
        return None
    tokens = text.split()
    for i, token in enumerate(tokens):
        bare = token.strip("()'`\",;:!?")
        # "Mr." / "e.g." / "U.S.": a period inside a token, or ending a token that is not the last.
        if "." in bare.rstrip(".") or (bare.endswith(".") and i < len(tokens) - 1):
            return None
    text = text.replace("`", "'").replace("-", " ")
    text = re.sub(r"[,;:.!?()]", " ", text)
    words = []
    for word in text.split():
        word = word.strip("'")  # Quotes like 'score' -> score; inner apostrophes stay (it's).
        if word:
            words.append(word.upper())
    if not min_words <= len(words) <= max_words:
        return None
    return " ".join(words)


def iter_wordnet_examples(path: PathLike) -> Iterator[str]:
    """Yield the quoted usage examples of one WordNet `data.*` file, in file order."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  "):  # Licence header lines start with two spaces.
                continue
            _, sep, gloss = line.partition(" | ")
            if sep:
                yield from _QUOTED.findall(gloss)


def load_wordnet_sentences(
    wordnet_dir: Optional[PathLike] = None, min_words: int = 3, max_words: int = 15
) -> List[str]:
    """All usable WordNet example sentences as transcripts, deduplicated, in a fixed order.

    The order is that of first appearance in data.noun, data.verb, data.adj, data.adv, so it is
    the same on every machine with the same WordNet; shuffle with a seed where needed.

    Args:
        wordnet_dir: Folder with WordNet's data.* files (default /usr/share/wordnet).
        min_words: Fewest words per sentence.
        max_words: Most words per sentence.

    Returns:
        Transcripts such as "THE CHILD WAS TAKEN ILL".

    Raises:
        SentenceSourceError: The WordNet files are missing.
    """
    wordnet_dir = Path(wordnet_dir) if wordnet_dir is not None else DEFAULT_WORDNET_DIR
    missing = [n for n in WORDNET_DATA_FILES if not (wordnet_dir / n).is_file()]
    if missing:
        raise SentenceSourceError(
            f"WordNet data files {', '.join(missing)} not found in {wordnet_dir}; install them with "
            f"`bash tools/install.sh` (or `sudo apt-get install wordnet-base`)"
        )
    return dedupe(
        t
        for name in WORDNET_DATA_FILES
        for example in iter_wordnet_examples(wordnet_dir / name)
        if (t := normalize_transcript(example, min_words, max_words)) is not None
    )


def dedupe(items: Iterable[str]) -> List[str]:
    """Drop repeats, keeping the first occurrence's position."""
    return list(dict.fromkeys(items))


def sentences_digest(sentences: Iterable[str]) -> str:
    """SHA-1 of a sentence list (identifies the text pool a corpus was built from)."""
    h = hashlib.sha1()
    for s in sentences:
        h.update(s.encode("utf-8") + b"\n")
    return h.hexdigest()
