# scores: a small data-processing action (BenchmarkPythonMemory): parses
# CSV rows and summarises them.
import csv
import io
import statistics
from dataclasses import dataclass
from decimal import Decimal


@dataclass
class Row:
    name: str
    score: Decimal


def main(params: dict) -> dict:
    rows = [Row(r["name"], Decimal(r["score"])) for r in csv.DictReader(io.StringIO(params.get("rows", "")))]
    scores = [float(r.score) for r in rows]
    return {
        "n": len(rows),
        "best": max(rows, key=lambda r: r.score).name if rows else None,
        "mean": statistics.fmean(scores) if scores else None,
    }
