"""Tests for `ScheduledModel.fit` under MultiWorkerMirroredStrategy.

One module fixture starts two worker processes of `multi_worker_fit.py`
on free 127.0.0.1 ports, each with its own TF_CONFIG and one CPU replica,
and reads the JSON each writes. Starting them costs about 30 to 60 s on
2 cores, so every test here shares that one run.
"""

import importlib.util
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER_SCRIPT = pathlib.Path(__file__).with_name("multi_worker_fit.py")
NUM_WORKERS = 2
WORKER_TIMEOUT_S = 300
LOG_TAIL_CHARS = 4000


def _load_worker_module():
    spec = importlib.util.spec_from_file_location(
        "multi_worker_fit", WORKER_SCRIPT
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_ports(count):
    """Return `count` distinct free TCP ports on 127.0.0.1.

    The sockets stay open until every port is picked, so the ports are
    distinct. Another process could still take one before a worker binds
    it. The workers then fail to start, and the test reports their logs.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _start_workers(output_dir):
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(NUM_WORKERS)]
    processes = []
    for index in range(NUM_WORKERS):
        tf_config = {
            "cluster": {"worker": addresses},
            "task": {"type": "worker", "index": index},
        }
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config))
        processes.append(subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT),
             str(output_dir / f"worker_{index}.json")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        ))
    return processes


def _stop(processes):
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """Run both workers and return (exit codes, logs, results per worker)."""
    output_dir = tmp_path_factory.mktemp("multi_worker")
    processes = _start_workers(output_dir)
    logs = []
    try:
        for index, process in enumerate(processes):
            try:
                output, _ = process.communicate(timeout=WORKER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _stop(processes)
                pytest.fail(
                    f"Worker {index} did not finish within "
                    f"{WORKER_TIMEOUT_S} s; both workers were killed."
                )
            logs.append(output[-LOG_TAIL_CHARS:])
    finally:
        _stop(processes)
    codes = [process.returncode for process in processes]
    results = []
    for index in range(NUM_WORKERS):
        path = output_dir / f"worker_{index}.json"
        results.append(json.loads(path.read_text()) if path.exists() else None)
    return codes, logs, results


@pytest.fixture(scope="module")
def results(workers):
    codes, logs, results = workers
    for index, (code, log) in enumerate(zip(codes, logs)):
        assert code == 0, f"worker {index} exited with {code}:\n{log}"
    return results


def _values(entries):
    return [np.asarray(value, "float64") for _, value in entries]


def test_workers_exit_cleanly(workers):
    codes, logs, results = workers
    assert codes == [0] * NUM_WORKERS, logs
    assert all(result is not None for result in results)
    assert [result["num_replicas"] for result in results] == [2, 2]


@pytest.mark.parametrize("fit", [
    "learned", "learned_two_steps_per_execution", "clipped",
    "mixed_overflow",
])
def test_workers_stay_identical(fit, results):
    first, second = results
    assert first[fit] == second[fit]


def test_actions_match_single_device(results):
    reference = _load_worker_module().fit_learned(1)
    learned = results[0]["learned"]

    assert learned["actions"] == reference["actions"]
    assert set(learned["actions"]) == {0, 1}
    for (path, value), expected in zip(
        learned["values"], _values(reference["values"])
    ):
        np.testing.assert_allclose(
            np.asarray(value, "float64"), expected, rtol=1e-5, atol=1e-6,
            err_msg=path,
        )
    assert learned["evaluation"].keys() == reference["evaluation"].keys()
    for key, value in learned["evaluation"].items():
        assert value == pytest.approx(reference["evaluation"][key],
                                      rel=1e-5), key
    # The REINFORCE update after the fit gives the same controller.
    for value, expected in zip(learned["controller"],
                               reference["controller"]):
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-7)


def test_controller_update_moves_weights(results):
    initial = _load_worker_module().learned_schedule().controller
    updated = results[0]["learned"]["controller"]
    changes = [
        np.abs(np.asarray(value) - v.numpy()).max()
        for value, v in zip(updated, initial.weights)
    ]
    assert max(changes) > 1e-4


def test_steps_per_execution_matches_one_step(results):
    one_step = results[0]["learned"]
    two_steps = results[0]["learned_two_steps_per_execution"]

    # Each epoch of 3 steps runs an execution of 2 steps, then one of 1.
    # Keras logs the last step of each execution.
    assert two_steps["actions"] == [
        one_step["actions"][i] for i in (1, 2, 4, 5, 7, 8)
    ]
    for (path, value), expected in zip(
        two_steps["values"], _values(one_step["values"])
    ):
        np.testing.assert_array_equal(
            np.asarray(value, "float64"), expected, err_msg=path
        )


def test_clipnorm_bounds_each_step(results):
    module = _load_worker_module()
    clipped = results[0]["clipped"]
    states = [clipped["initial"]] + clipped["snapshots"]

    # Keras clips each replica's gradient of each variable to clipnorm,
    # then sums the two replicas' gradients.
    bound = 2 * module.CLIP_LEARNING_RATE * module.CLIPNORM
    for before, after in zip(states, states[1:]):
        for old, new in zip(before, after):
            change = np.linalg.norm(np.asarray(new) - np.asarray(old))
            assert change <= bound * (1 + 1e-5)
    # Without clipping, the latest step of each action would have moved
    # its weights by learning rate * gradient norm, far beyond the bound.
    norms = np.asarray(clipped["grad_norm_features"][0]) * np.sqrt(
        clipped["num_parameters"]
    )
    assert np.all(module.CLIP_LEARNING_RATE * norms > 5 * bound)


def test_overflow_shard_skips_every_worker(results):
    module = _load_worker_module()
    assert sorted(r["overflow_in_local_shard"] for r in results) == [
        False, True
    ]
    for result in results:
        mixed = result["mixed_overflow"]
        assert mixed["actions"] == [-1, 1, 0]
        assert mixed["skipped_steps"] == 1
        assert mixed["snapshots"][0] == mixed["initial"]
        assert mixed["loss_scales"] == [
            module.INITIAL_LOSS_SCALE / 2, module.INITIAL_LOSS_SCALE
        ]
        for value in mixed["snapshots"][-1]:
            assert np.all(np.isfinite(value))
