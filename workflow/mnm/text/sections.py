"""Text sections of an article, as fed to the encoders."""

from __future__ import annotations

import re

import pandas as pd

#: Sections an encoder can embed.
SECTIONS = ("title", "abstract", "body", "title_abstract")

_ENDS_SENTENCE = re.compile(r"[.!?:;]$")


def clean_text(value) -> str | None:
    """Strip a cell; None, NaN, non-strings and blank strings become None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def join_title_abstract(title: str | None, abstract: str | None) -> str | None:
    """``title + ". " + abstract``; the separator is a space when the title already ends a sentence.

    Either part may be missing (the other is returned); both missing gives None.
    """
    if title is None or abstract is None:
        return title or abstract
    separator = " " if _ENDS_SENTENCE.search(title) else ". "
    return f"{title}{separator}{abstract}"


def required_columns(section: str) -> list[str]:
    """Columns of ``articles.parquet`` a section is built from."""
    if section not in SECTIONS:
        raise ValueError(f"unknown text section {section!r}; expected one of {SECTIONS}")
    return ["title", "abstract"] if section == "title_abstract" else [section]


def article_columns(section: str | None = None) -> list[str]:
    """Columns of ``articles.parquet`` to read: ``article_id``, plus what ``section`` is built from."""
    return ["article_id", *(required_columns(section) if section is not None else [])]


def section_texts(articles: pd.DataFrame, section: str, source: str = "articles") -> list[str | None]:
    """Text of ``section`` for every row of ``articles`` (None where the section is empty).

    Parameters
    ----------
    articles : pandas.DataFrame
        Must hold the columns of :func:`required_columns`.
    section : str
        One of :data:`SECTIONS`.
    source : str
        Name of the table, used in error messages.
    """
    columns = required_columns(section)
    missing = [c for c in columns if c not in articles.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing} needed for text section {section!r}")
    cleaned = {c: [clean_text(v) for v in articles[c].tolist()] for c in columns}
    if section == "title_abstract":
        return [join_title_abstract(t, a) for t, a in zip(cleaned["title"], cleaned["abstract"])]
    return cleaned[section]
