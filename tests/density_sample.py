"""The Density seed's sample data and placement table, shared by the Density tests.

``tests/engine/test_density.py`` and ``tests/web/test_density_routes.py`` import it as
``from density_sample import ...`` (``tests/`` is on ``sys.path``, as for ``conftest``).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

#: The seed's sample data (app/data/dpu_data.csv of dhw), copied here unchanged: 563 rows,
#: 33 of them identical to an earlier one (density.md 3.7).
SAMPLE = Path(__file__).resolve().parent / "data" / "density-dpu-data.csv"
#: The sample's last row: the instant of the seed's realtime figure.
SAMPLE_END = "2018-03-02T16:39:37.240Z"

#: The seed's ``dpu_location`` rows (density.md 3.2), verbatim: (dpu, space, doorway, sign).
SEED_TABLE = [("283", "A", "X", 1), ("423", "A", "Z", 1), ("423", "A", "Z", -1)]
#: Every sensor's rows were "installed" before the sample begins.
INSTALLED = "2018-01-01T00:00:00Z"
#: The seed's count for A with its table and every row: 283's 272 - 253 (423's two rows for A
#: cancel); the realtime example of density.md 3.1.
SEED_COUNT_A = 19


def sample_rows() -> list[dict[str, Any]]:
    """The sample's rows as the seed's loader posted them (``{"timestamp", "direction",
    "dpu_id"}``, all text)."""
    with SAMPLE.open(newline="") as f:
        return list(csv.DictReader(f))


def placements_from_table(table: list[tuple[str, str, str, int]]) -> dict[str, dict[str, Any]]:
    """The seed's table as ``PUT /api/sensors/{dpu}/placement`` bodies: per sensor, each space
    with the sum of its rows' signs (the seed moved each space by every row's ``sign x
    direction``), spaces whose signs cancel left out -- 423 becomes ``"spaces": {}``."""
    bodies: dict[str, dict[str, Any]] = {}
    for dpu, space, doorway, sign in table:
        body = bodies.setdefault(dpu, {"installed": INSTALLED, "doorway": doorway, "spaces": {}})
        body["spaces"][space] = body["spaces"].get(space, 0) + sign
    for body in bodies.values():
        body["spaces"] = {space: sign for space, sign in body["spaces"].items() if sign}
    return bodies


#: The seed's table, translated: ``{"283": {..., "spaces": {"A": 1}}, "423": {..., "spaces": {}}}``.
SEED_PLACEMENTS = placements_from_table(SEED_TABLE)

#: Not the seed's table: 423 read as a doorway between A and B (what two rows of opposite
#: sign would describe for two spaces), so that the tests exercise a sensor counting for two
#: spaces at once on real data. Final counts with every row: A = 19 + (15 - 23), B = 8.
TWO_SPACE_PLACEMENTS = {
    "283": {"installed": INSTALLED, "doorway": "X", "spaces": {"A": 1}},
    "423": {"installed": INSTALLED, "doorway": "Z", "spaces": {"A": 1, "B": -1}},
}
