"""Phenotype texts from templates, tagged token by token, embedded by the run's text encoder.

Each subject gets one text from a template (chosen by a stable hash of its id when there are
several), e.g. ``"adult male participant with autism, scanned at NYU."``. Templates use the
slots :data:`SLOTS`; every token is tagged with the slot whose words it belongs to (through
the tokenizer's character offsets), which is how the losses find the *disease tokens*
(slot ``diagnosis``) and the *sensitive tokens* (slots ``sex``, ``site``, ...). Token
vectors are the encoder's contextual last hidden states (:meth:`mnm.text.Encoder.embed_tokens`).

Zero-shot diagnosis uses one prompt per diagnosis value, built from the prompt template
(only the ``diagnosis`` slot), e.g. ``"participant with autism."``.

Outputs of the stage: ``texts.parquet`` (``text_id``, ``kind`` subject/prompt, ``text``,
``diagnosis`` value of a prompt or -1), ``subject_texts.parquet`` (``subject_id``,
``text_id``) and ``tokens.parquet`` (``text_id``, ``position``, ``token``, ``slot``,
``embedding``).
"""

from __future__ import annotations

import logging
import string
import zlib

import numpy as np
import pandas as pd

from mnm.io import read_parquet, write_matrix, write_parquet

__all__ = [
    "SLOTS",
    "DIAGNOSIS_WORDS",
    "age_group",
    "fill_template",
    "token_slots",
    "subject_texts",
    "prompt_texts",
    "embed_tokens",
    "build_texts",
]

logger = logging.getLogger(__name__)

SLOTS = ("diagnosis", "sex", "age_group", "site")
#: (control, patient) words per dataset.
DIAGNOSIS_WORDS = {
    "generated": ("typical development", "autism"),
    "abide": ("typical development", "autism"),
    "adhd": ("typical development", "ADHD"),
}


def age_group(age: float) -> str:
    """``child`` (< 13), ``adolescent`` (13 to < 18) or ``adult``."""
    if not np.isfinite(age):
        raise ValueError("age is missing")
    return "child" if age < 13 else "adolescent" if age < 18 else "adult"


def fill_template(template: str, values: dict) -> tuple[str, dict]:
    """Fill ``{slot}`` fields and return ``(text, {slot: (start, end)})`` character spans.

    Raises
    ------
    ValueError
        On a field that is not a slot of :data:`SLOTS`, or a slot without a value.
    """
    parts, spans = [], {}
    position = 0
    for literal, field, spec, conversion in string.Formatter().parse(template):
        parts.append(literal)
        position += len(literal)
        if field is None:
            continue
        if field not in SLOTS or spec or conversion:
            raise ValueError(f"template {template!r}: field {{{field}}} is not one of {SLOTS}")
        if field not in values:
            raise ValueError(f"template {template!r}: no value for {{{field}}}")
        word = str(values[field])
        spans[field] = (position, position + len(word))
        parts.append(word)
        position += len(word)
    return "".join(parts), spans


def token_slots(offsets, spans: dict) -> list[str]:
    """Slot of each token (``""`` when it belongs to none) from its ``(start, end)`` offsets."""
    slots = []
    for start, end in offsets:
        slot = next((s for s, (a, b) in spans.items() if start < b and end > a), "")
        slots.append(slot)
    return slots


def _template_index(subject_id: str, n_templates: int) -> int:
    return zlib.crc32(str(subject_id).encode()) % n_templates


def subject_texts(subjects: pd.DataFrame, templates: list[str], dataset: str) -> pd.DataFrame:
    """One text per subject: ``subject_id``, ``text``, ``spans`` (slot -> character span)."""
    if not templates:
        raise ValueError("neurolip.text.templates is empty")
    control, patient = DIAGNOSIS_WORDS[dataset]
    rows = []
    for s in subjects.itertuples():
        values = {"diagnosis": patient if s.diagnosis == 1 else control, "sex": s.sex,
                  "age_group": age_group(s.age), "site": s.site}
        text, spans = fill_template(templates[_template_index(s.subject_id, len(templates))], values)
        rows.append({"subject_id": s.subject_id, "text": text, "spans": spans})
    return pd.DataFrame(rows)


def prompt_texts(prompt_template: str, dataset: str) -> pd.DataFrame:
    """Zero-shot prompts: ``diagnosis`` (0 control, 1 patient), ``text``, ``spans``."""
    words = DIAGNOSIS_WORDS[dataset]
    rows = []
    for value, word in enumerate(words):
        text, spans = fill_template(prompt_template, {"diagnosis": word})
        if "diagnosis" not in spans:
            raise ValueError(f"neurolip.text.prompt_template {prompt_template!r} has no {{diagnosis}} slot")
        rows.append({"diagnosis": value, "text": text, "spans": spans})
    return pd.DataFrame(rows)


def embed_tokens(texts: list[str], spans: list[dict], encoder) -> pd.DataFrame:
    """Token table of ``texts``: ``text_index``, ``position``, ``token``, ``slot``, ``embedding``.

    ``encoder`` is a :class:`mnm.text.Encoder` (anything with ``tokenizer``, ``tokenize``
    and ``embed_tokens``).
    """
    vectors = encoder.embed_tokens(list(texts))
    content_ids = encoder.tokenize(list(texts))
    rows, matrix = [], []
    for i, (text, span) in enumerate(zip(texts, spans)):
        encoded = encoder.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if list(encoded["input_ids"]) != list(content_ids[i]):
            raise ValueError(f"text {i}: tokenizer offsets disagree with the encoder's tokens")
        slots = token_slots(encoded["offset_mapping"], span)
        missing = set(span) - set(slots)
        if missing:
            raise ValueError(f"text {text!r}: slot(s) {sorted(missing)} got no token")
        tokens = encoder.tokenizer.convert_ids_to_tokens(encoded["input_ids"])
        for k, (token, slot) in enumerate(zip(tokens, slots)):
            rows.append({"text_index": i, "position": k, "token": token, "slot": slot})
        matrix.append(vectors[i])
    table = pd.DataFrame(rows)
    table["embedding"] = list(np.concatenate(matrix).astype(np.float32))
    return table


def build_texts(subjects_path, dataset: str, templates: list[str], prompt_template: str, encoder,
                texts_path, subject_texts_path, tokens_path) -> None:
    """Stage entry: write ``texts``, ``subject_texts`` and ``tokens`` Parquet files (see above)."""
    subjects = read_parquet(subjects_path)
    per_subject = subject_texts(subjects, templates, dataset)
    prompts = prompt_texts(prompt_template, dataset)
    unique = per_subject.drop_duplicates("text").reset_index(drop=True)
    texts = pd.concat([
        pd.DataFrame({"kind": "subject", "text": unique["text"], "diagnosis": -1, "spans": unique["spans"]}),
        pd.DataFrame({"kind": "prompt", "text": prompts["text"], "diagnosis": prompts["diagnosis"],
                      "spans": prompts["spans"]}),
    ], ignore_index=True)
    texts.insert(0, "text_id", [f"t{i:05d}" for i in range(len(texts))])
    tokens = embed_tokens(texts["text"].tolist(), texts["spans"].tolist(), encoder)
    text_ids = texts["text_id"].to_numpy()[tokens["text_index"].to_numpy()]
    id_of_subject_text = dict(zip(texts.loc[texts["kind"] == "subject", "text"],
                                  texts.loc[texts["kind"] == "subject", "text_id"]))
    write_parquet(texts.drop(columns="spans").astype({"diagnosis": np.int64}), texts_path)
    write_parquet(pd.DataFrame({"subject_id": per_subject["subject_id"],
                                "text_id": per_subject["text"].map(id_of_subject_text)}), subject_texts_path)
    write_matrix(tokens_path, text_ids, np.stack(tokens["embedding"].to_numpy()), id_column="text_id",
                 extra={"position": tokens["position"].to_numpy(np.int64),
                        "token": tokens["token"].to_numpy(object), "slot": tokens["slot"].to_numpy(object)})
    logger.info("%d subject texts (%d distinct), %d prompts, %d tokens embedded",
                len(per_subject), len(unique), len(prompts), len(tokens))
