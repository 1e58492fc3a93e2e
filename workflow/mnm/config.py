"""Load and validate the pipeline configuration against its JSON schema.

The schema (``workflow/schemas/config.schema.yaml``) holds a description and a default for
every key. Validation

1. coerces numeric strings where the schema expects a number or an integer (values given on
   the command line, e.g. ``--config 'folds={n_folds: "3"}'``, may arrive as strings);
2. fills the defaults in (following ``$ref`` to the schema's ``$defs``);
3. checks the schema, refuses NaN and infinities anywhere (JSON Schema accepts them as
   numbers), then the cross-key rules a schema cannot express clearly (e.g. a pubget query
   is required only when the source is pubget; no more folds than the corpus allows).

Every error names the offending key as a dotted path, e.g. ``folds.n_folds``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
#: Smallest test fold worth scoring (Recall@1 of a 1-article fold is meaningless).
MIN_ARTICLES_PER_FOLD = 2


class ConfigError(ValueError):
    """Invalid configuration; the message starts with the dotted key."""


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def resolve(sub: dict, schema: dict) -> dict:
    """A property schema with its ``$ref`` (``#/$defs/<name>``) merged in (local keys win)."""
    ref = sub.get("$ref")
    if not ref:
        return sub
    target = schema
    for part in ref.lstrip("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in sub.items() if k != "$ref"}}


def _types(sub: dict) -> set:
    kind = sub.get("type", [])
    return {kind} if isinstance(kind, str) else set(kind)


def _coerce_number(value, sub: dict):
    """A numeric string -> int/float when the schema allows that type; else unchanged."""
    if not isinstance(value, str):
        return value
    types = _types(sub)
    try:
        number = float(value)
    except ValueError:
        return value
    if "integer" in types and number.is_integer():
        return int(number)
    return number if "number" in types else value


def _fill_and_coerce(instance: dict, node: dict, schema: dict) -> None:
    """Insert defaults for missing keys and coerce numeric strings, recursing into objects."""
    for key, sub in node.get("properties", {}).items():
        sub = resolve(sub, schema)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            instance[key] = _coerce_number(instance[key], sub)
            if isinstance(instance[key], list) and "items" in sub:
                instance[key] = [_coerce_number(v, resolve(sub["items"], schema)) for v in instance[key]]
        if "object" in _types(sub) and isinstance(instance.get(key), dict):
            _fill_and_coerce(instance[key], sub, schema)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and extra.get("type") == "object":
        known = set(node.get("properties", {}))
        for key, value in instance.items():
            if key not in known and isinstance(value, dict):
                _fill_and_coerce(value, extra, schema)


def _non_finite(value, path=""):
    """Yield the dotted keys of NaN or infinite floats."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path or "<top level>"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _non_finite(item, f"{path}[{i}]")


def _key(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        path = f"{path}.{missing}" if path else missing
    elif error.validator == "additionalProperties":
        return f"{path or '<top level>'} (unknown key)"
    return path or "<top level>"


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Return a validated copy of ``config`` with defaults filled in.

    Raises
    ------
    ConfigError
        Naming the first offending key, e.g. ``config key folds.n_folds: -1 is less than
        the minimum of 2``.
    """
    schema = schema or load_schema()
    config = copy.deepcopy(dict(config))
    _fill_and_coerce(config, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"config key {_key(e)}: {e.message}" for e in errors]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    bad = list(_non_finite(config))
    if bad:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(
            f"config key {key}: NaN or infinite values are not allowed" for key in bad))
    _check_cross_keys(config)
    return config


def corpus_size_bound(config: dict) -> tuple[int, str] | None:
    """An upper bound on the number of articles the corpus stage can produce, and its source.

    Known before the corpus stage runs for NiMARE studysets (their study count) and for a
    pubget download capped by ``n_docs``; an existing ``corpus/articles.parquet`` gives the
    exact number. None when nothing is known yet.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    articles = Path(config["results_dir"]) / "corpus" / "articles.parquet"
    if articles.is_file():
        try:
            return pq.ParquetFile(articles).metadata.num_rows, str(articles)
        except (OSError, pa.ArrowException):
            pass  # unreadable: the job that reads it fails with the file named, in its own log
    corpus = config["corpus"]
    if corpus["source"] == "nimare_bundled":
        from mnm.corpus import bundled_studyset_dir

        folder = Path(corpus["nimare_studyset"] or bundled_studyset_dir())
        studies = folder / "studies.parquet"
        if studies.is_file():
            return pq.ParquetFile(studies).metadata.num_rows, str(studies)
    if corpus["source"] == "pubget" and corpus["pubget"].get("n_docs"):
        return int(corpus["pubget"]["n_docs"]), "corpus.pubget.n_docs"
    return None


def _check_cross_keys(config: dict) -> None:
    corpus = config["corpus"]
    if corpus["source"] == "pubget" and not corpus["pubget"].get("query"):
        raise ConfigError("config key corpus.pubget.query: required when corpus.source is "
                          "'pubget'")
    if corpus["source"] == "pubget_dir" and not corpus.get("pubget_dir"):
        raise ConfigError("config key corpus.pubget_dir: required when corpus.source is "
                          "'pubget_dir'")
    text = config["text"]
    if text["encoder"] not in text["encoders"]:
        raise ConfigError(f"config key text.encoder: {text['encoder']!r} is not one of "
                          f"text.encoders {sorted(text['encoders'])}")
    missing = [s for s in config["models"]["sections"] if s not in text["sections"]]
    if missing:
        raise ConfigError(f"config key models.sections: {missing} not embedded; add them to "
                          "text.sections")
    tradeoff = config["models"]["tradeoff"]
    if tradeoff["lambda_hier"] and tradeoff["section"] not in text["sections"]:
        raise ConfigError(f"config key models.tradeoff.section: {tradeoff['section']!r} is not "
                          f"embedded; add it to text.sections {text['sections']}")
    fractions = config["evaluation"]["dice_top_fractions"]
    if any(b <= a for a, b in zip(fractions, fractions[1:])):
        raise ConfigError(f"config key evaluation.dice_top_fractions: {fractions} must be strictly "
                          "increasing")
    bound = corpus_size_bound(config)
    n_folds = config["folds"]["n_folds"]
    if bound is not None and n_folds * MIN_ARTICLES_PER_FOLD > bound[0]:
        raise ConfigError(
            f"config key folds.n_folds: {n_folds} folds for a corpus of at most {bound[0]} "
            f"articles ({bound[1]}); each test fold needs at least {MIN_ARTICLES_PER_FOLD} "
            f"articles, so use at most {bound[0] // MIN_ARTICLES_PER_FOLD} folds")
