"""Prompt hygiene (pure): the normalised hash of a prompt, its MinHash bands for near-duplicate clustering, and the
automatic categories of a battle.

Duplicates. LMArena deduplicates prompts before fitting because a few prompts ("hi", a viral test question, a
script's loop) would otherwise weigh as much as thousands of distinct ones. Exact duplicates share the hash of
the normalised text (Unicode NFKC, case-folded, runs of whitespace collapsed, outer whitespace and punctuation
stripped). Near duplicates share a MinHash band: a signature of 128 permutations over the character 5-grams of the
normalised text (datasketch), cut into 16 bands of 8 rows; two prompts whose 5-gram Jaccard similarity is s share
at least one band with probability 1 − (1 − s⁸)¹⁶ (0.5 at s ≈ 0.71, 0.96 at s = 0.8, 0.02 at s = 0.5; Leskovec,
Rajaraman & Ullman, "Mining of Massive Datasets", ch. 3). The database keeps which cluster each band belongs to
(`arena.models.PromptBand`); a fit caps each cluster's weight (`dedup_weight`).

Categories. Beyond multi_turn and long_prompt: `code` (a fenced block, or several lines that read as code), `math`
(LaTeX, or an equation or math vocabulary with numbers) and `lang_<ISO 639-1>` when py3langid is at least
LANGUAGE_MIN_CONFIDENCE sure (its calibrated probability; py3langid is langid.py's maintained fork: pure Python
and numpy, a 4 MB model loaded once per process on first use, < 1 ms a prompt). Code and math are heuristics
(LMArena labels categories with an LLM); they err towards leaving a prompt out of a category.
"""

from __future__ import annotations

import hashlib
import re
import string
import threading
import unicodedata
from typing import Any

import numpy as np
from datasketch import MinHash

LONG_PROMPT_CHARS = 1000
LANGUAGE_MIN_CONFIDENCE = 0.5
MINHASH_PERMUTATIONS = 128
MINHASH_BANDS = 16  # rows per band = 128 / 16 = 8
SHINGLE = 5

_WHITESPACE = re.compile(r"\s+")
_FENCE = re.compile(r"```|~~~")
_CODE_LINE = re.compile(
    r"^\s*(?:def |class |import |from \S+ import |#include|public |private |function |const |let |var |return\b|"
    r"for\s*\(|while\s*\(|if\s*\(|SELECT |INSERT |CREATE TABLE|<\w+[^>]*>|[}{]\s*$|.*;\s*$|.*\)\s*\{\s*$|.*=>)",
    re.IGNORECASE,
)
_LATEX = re.compile(r"\$[^$\n]+\$|\\(?:frac|int|sum|sqrt|lim|cdot|times|alpha|beta|theta|pi)\b|\\\(|\\\[")
_EQUATION = re.compile(
    r"\d\s*[-+*/^×÷]\s*\d|[a-z]\s*[\^²³]\s*\d?|\b\d*[a-z]\s*[-+]\s*\d+\s*=|=\s*-?\d|\d\s*%\s*of\s+\$?\d"
)
_MATH_WORDS = re.compile(
    r"\b(?:solve|equation|integral|derivative|probability|prove|theorem|matrix|polynomial|factorial|"
    r"calculate|compute|sum of|square root|prime|logarithm|percent)\b",
    re.IGNORECASE,
)


def prompt_text(content: str | list[Any]) -> str:
    """The user's text of a prompt: the string, or every user turn of a message list, joined by blank lines."""
    if isinstance(content, str):
        return content
    return "\n\n".join(str(m.get("content", "")) for m in content if isinstance(m, dict) and m.get("role") == "user")


def normalise(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _WHITESPACE.sub(" ", folded).strip().strip(string.punctuation + " ")


def prompt_hash(content: str | list[Any]) -> str:
    """sha256 (hex) of the normalised user text: equal for prompts that differ in case, spacing or end punctuation."""
    return hashlib.sha256(normalise(prompt_text(content)).encode()).hexdigest()


def minhash_bands(content: str | list[Any]) -> list[str]:
    """The prompt's LSH band keys ("<band>:<16 hex>"); prompts sharing one are near-duplicate candidates."""
    text = normalise(prompt_text(content))
    shingles = {text[i : i + SHINGLE] for i in range(max(1, len(text) - SHINGLE + 1))}
    signature = MinHash(num_perm=MINHASH_PERMUTATIONS, seed=1)
    signature.update_batch([s.encode() for s in shingles])
    rows = MINHASH_PERMUTATIONS // MINHASH_BANDS
    values = np.asarray(signature.hashvalues, dtype=np.uint64)
    keys = []
    for band in range(MINHASH_BANDS):
        digest = hashlib.sha1(values[band * rows : (band + 1) * rows].tobytes(), usedforsecurity=False)
        keys.append(f"{band}:{digest.hexdigest()[:16]}")
    return keys


# --- categories ----------------------------------------------------------------------------------------------
_identifier: Any = None
_identifier_lock = threading.Lock()


def _language_identifier() -> Any:
    global _identifier
    with _identifier_lock:
        if _identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier  # 0.6 s: loaded on the first prompt

            _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        return _identifier


def language(text: str) -> str | None:
    """ISO 639-1 code of the text's language, or None when unsure (short, mixed, or code)."""
    if len(text.strip()) < 3:
        return None
    code, confidence = _language_identifier().classify(text)
    return code if confidence >= LANGUAGE_MIN_CONFIDENCE else None


def is_code(text: str) -> bool:
    if _FENCE.search(text):
        return True
    lines = [line for line in text.splitlines() if line.strip()]
    return sum(1 for line in lines if _CODE_LINE.match(line)) >= 2


def is_math(text: str) -> bool:
    if _LATEX.search(text):
        return True
    has_number = any(ch.isdigit() for ch in text)
    return bool(_EQUATION.search(text)) and has_number or bool(_MATH_WORDS.search(text)) and has_number


def prompt_categories(content: str | list[Any]) -> list[str]:
    """Automatic categories of a prompt: multi_turn, long_prompt, code, math, lang_<code>."""
    categories = []
    if isinstance(content, list) and sum(1 for m in content if isinstance(m, dict) and m.get("role") == "user") > 1:
        categories.append("multi_turn")
    text = prompt_text(content)
    if len(text) > LONG_PROMPT_CHARS:
        categories.append("long_prompt")
    code = is_code(text)
    if code:
        categories.append("code")
    if is_math(text):
        categories.append("math")
    found = None if code else language(text)  # code reads as noise to a language model of words
    if found:
        categories.append(f"lang_{found}")
    return categories


def dedup_weight(cluster_votes: int, cap: int) -> float:
    """A battle's weight when its prompt cluster has `cluster_votes` counted votes: the cluster weighs at most `cap`."""
    return 1.0 if cluster_votes <= cap else cap / cluster_votes
