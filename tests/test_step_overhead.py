"""Smoke test of `benchmarks/step_overhead.py` at tiny settings.

The test checks the record's structure only. Timings on a shared machine
vary too much for assertions on their size.
"""

import importlib.util
import json
import math
import pathlib

BENCHMARK_PATH = (
    pathlib.Path(__file__).resolve().parents[1]
    / "benchmarks" / "step_overhead.py"
)
ROW_KEYS = {
    "model", "strategy", "steps_per_execution", "plain_ms", "scheduled_ms",
    "ratio",
}


def _load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "step_overhead", BENCHMARK_PATH
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_overhead_writes_record(tmp_path, capsys):
    benchmark = _load_benchmark()
    json_path = tmp_path / "step_overhead.json"
    argv = [
        "--steps", "5", "--rounds", "2", "--steps-per-execution", "1,5",
        "--json", str(json_path),
    ]

    returned = benchmark.main(argv)

    record = json.loads(json_path.read_text())
    assert record == returned
    assert record["command"] == (
        "python benchmarks/step_overhead.py " + " ".join(argv)
    )
    assert isinstance(record["machine"], str)
    assert record["machine"]
    rows = record["rows"]
    assert [row["steps_per_execution"] for row in rows] == [1, 5]
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["model"] == "mlp"
        assert row["strategy"] == "none"
        for key in ("plain_ms", "scheduled_ms", "ratio", "cpu_ratio"):
            assert math.isfinite(row[key]), key
            assert row[key] > 0, key
        assert len(row["plain_round_ms"]) == 2
        assert len(row["scheduled_round_ms"]) == 2
    table = capsys.readouterr().out
    assert "scheduled_ms" in table


def test_steps_round_up_to_execution_multiple():
    benchmark = _load_benchmark()

    row = benchmark.measure(
        steps_per_execution=4, steps=5, rounds=1, batch_size=8
    )

    assert row["steps"] == 8
