"""Validates application/occi+json documents against the OCCI 1.2 schema (tests/data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA = json.loads((Path(__file__).parent / "data" / "occi-1.2-schema.json").read_text())


def errors(document: Any, definition: str = "") -> list[str]:
    """Why the document is not valid as `definition`; "" checks it as an OCCI JSON document
    (the schema's top level: any of its definitions)."""
    wrapper = SCHEMA if not definition else {"$schema": SCHEMA["$schema"], "definitions": SCHEMA["definitions"], "$ref": f"#/definitions/{definition}"}
    found = jsonschema.Draft4Validator(wrapper).iter_errors(document)
    return [f"/{'/'.join(map(str, e.path))}: {e.message[:300]}" for e in found]
