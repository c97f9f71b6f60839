"""A wrong set's identity and its record (torch-free): the short name of everything that defines it
(the name of its cache entry), and the file a sweep's search task writes it into, which the
launching process reads back to draw the shared selection."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sweep.data.examples import Example, examples_table, table_examples
from sweep.files import atomic_write_text

FOUND_CSV, FOUND_JSON = "wrong_set.csv", "wrong_set.json"  # in a search task's directory


def key_name(key: dict) -> str:
    """A wrong-set key's short name: the name of its cache entry."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def examples_digest(examples: list[Example]) -> str:
    return hashlib.sha256(repr([(e.path, e.label) for e in examples]).encode()).hexdigest()[:16]


def precomputed_key(pool: list[Example], examples: list[Example]) -> dict:
    """The key of a wrong set given with the data (a correctness matrix's row): the set itself."""
    return {"precomputed": examples_digest(pool), "examples": examples_digest(examples)}


@dataclass
class Found:
    """A wrong set as a sweep's shared selection needs it: its key's name, its examples in pool order,
    and where it was found (a search task's host and device, or the launching process)."""
    key: str
    pool: list[Example]
    where: str
    definition: str = ""  # the digest of the settings it was found for

    def write(self, directory: Path) -> None:
        atomic_write_text(directory / FOUND_CSV, examples_table(self.pool).to_csv(index=False))
        atomic_write_text(directory / FOUND_JSON, json.dumps(
            {"definition": self.definition, "key": self.key, "wrong": len(self.pool), "where": self.where},
            indent=2) + "\n")

    @classmethod
    def read(cls, directory: Path, definition: str) -> Found | None:
        """The wrong set a search task wrote in `directory` for `definition`, or None."""
        record = directory / FOUND_JSON
        kept = json.loads(record.read_text()) if record.exists() else {}
        if kept.get("definition") != definition:
            return None
        return cls(kept["key"], table_examples(pd.read_csv(directory / FOUND_CSV)), kept["where"], definition)
