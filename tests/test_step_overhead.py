"""Smoke tests of `benchmarks/step_overhead.py` at tiny settings.

The tests check the record's structure and the action counting only.
Timings on a shared machine vary too much for assertions on their size.
They measure single-device rows only: this process already has the
MirroredStrategy of `test_distribute.py`, and a second one in the same
process can abort on colliding collective keys.
"""

import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest
import tensorflow as tf

BENCHMARK_PATH = (
    pathlib.Path(__file__).resolve().parents[1]
    / "benchmarks" / "step_overhead.py"
)
ROW_KEYS = {
    "model", "strategy", "steps_per_execution", "plain_ms", "scheduled_ms",
    "ratio", "plain_cpu_ms", "scheduled_cpu_ms", "cpu_ratio", "target",
    "action_fractions", "plain_action_ms",
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
        "--models", "mlp,dcgan", "--strategies", "none", "--steps", "2",
        "--rounds", "2", "--mlp-steps-per-execution", "1,2",
        "--json", str(json_path),
    ]

    returned = benchmark.main(argv)

    record = json.loads(json_path.read_text())
    assert record == returned
    assert record["command"] == (
        "python benchmarks/step_overhead.py " + " ".join(argv)
    )
    assert record["machine"]
    rows = record["rows"]
    assert [(r["model"], r["steps_per_execution"]) for r in rows] == [
        ("mlp", 1), ("mlp", 2), ("dcgan", 1)
    ]
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["strategy"] == "none"
        for key in ("plain_ms", "scheduled_ms", "ratio", "cpu_ratio"):
            assert math.isfinite(row[key]), key
            assert row[key] > 0, key
        assert len(row["plain_round_ms"]) == 2
        assert len(row["scheduled_round_ms"]) == 2
        assert sum(row["action_fractions"].values()) == 1.0
    assert [row["target"] for row in rows] == [1.10, 1.10, 1.05]
    table = capsys.readouterr().out
    assert "scheduled_ms" in table


def test_action_counts_match_fit(step_recorder):
    benchmark = _load_benchmark()
    task = benchmark.mlp_task()
    scheduled, _ = benchmark.make_models(task, steps_per_execution=1)
    recorder = step_recorder()
    scheduled.fit(task.make_dataset(task.batch_size), steps_per_epoch=20,
                  epochs=1, shuffle=False, verbose=0, callbacks=[recorder])

    actions = np.array(recorder.column("action"), "int64")
    counts = benchmark.scheduled_action_counts(2, 0, 20)
    np.testing.assert_array_equal(counts, np.bincount(actions, minlength=2))
    assert counts.min() > 0


def test_missing_model_is_skipped(monkeypatch, capsys):
    benchmark = _load_benchmark()

    def missing_task():
        raise ImportError("No module named 'autoloss_models.seq2seq'")

    monkeypatch.setitem(benchmark.TASK_FACTORIES, "seq2seq", missing_task)
    tasks, skipped = benchmark.load_tasks(["mlp", "seq2seq"])

    assert [task.name for task in tasks] == ["mlp"]
    assert skipped == [{
        "model": "seq2seq",
        "reason": "No module named 'autoloss_models.seq2seq'",
    }]
    assert "Skipped seq2seq" in capsys.readouterr().out


def test_steps_round_up_to_execution_multiple():
    benchmark = _load_benchmark()

    row = benchmark.measure(
        benchmark.mlp_task(), "none", None, steps_per_execution=4, steps=5,
        rounds=1,
    )

    assert row["steps"] == 8


def test_gpu_throughput_exits_without_gpu():
    spec = importlib.util.spec_from_file_location(
        "gpu_throughput", BENCHMARK_PATH.with_name("gpu_throughput.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("This machine has a GPU.")

    with pytest.raises(SystemExit, match="No GPU found"):
        module.main(["--steps", "1"])
