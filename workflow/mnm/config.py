"""Load and validate the pipeline configuration against its JSON schema.

The schema (``workflow/schemas/config.schema.yaml``) holds a description and a default for
every key. Validation fills the defaults in, then checks the cross-key rules a schema cannot
express clearly (e.g. a pubget query is required only when the source is pubget). Every error
names the offending key as a dotted path, e.g. ``folds.n_folds``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """Invalid configuration; the message starts with the dotted key."""


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def _fill_defaults(instance: dict, schema: dict) -> None:
    """Insert schema defaults for missing keys, recursing into nested objects."""
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if sub.get("type") == "object" and isinstance(instance.get(key), dict):
            _fill_defaults(instance[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and extra.get("type") == "object":
        known = set(schema.get("properties", {}))
        for key, value in instance.items():
            if key not in known and isinstance(value, dict):
                _fill_defaults(value, extra)


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
    _fill_defaults(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"config key {_key(e)}: {e.message}" for e in errors]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    _check_cross_keys(config)
    return config


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
