"""bench/benchmark.py in its smallest configuration: it runs and ends with the JSON line issues 3 and 8 ask for."""
import json

import tensorflow as tf

from conftest import run_script

KEYS = {"train_img_per_s", "keras_img_per_s", "ratio_vs_keras", "matmul_gflops", "share_of_matmul_peak",
        "loop_overhead", "snapshot_bytes", "checkpoint_s", "checkpoint_per_epoch_cpu", "checkpoint_per_epoch_gpu",
        "checkpoint_by_clock_share", "probe_bytes_per_1000_steps_worst"}


def test_smallest_benchmark_ends_with_the_json_line(tmp_path):
    result = run_script("bench/benchmark.py", ["--image-size", "16", "--batch-size", "2", "--repeats", "1",
                                               "--steps", "1", "--loop-steps", "2", "--loop-repeats", "1",
                                               "--matmul-size", "64"], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert KEYS <= set(report)
    assert all(report[key] > 0 for key in KEYS)
    if not tf.config.list_physical_devices("GPU"):
        assert report["keras_jit_compile"] is False  # Keras' "auto" means no XLA without a GPU
    # The conv layers' weights and biases, float32, plus the index file.
    assert report["snapshot_bytes"] > 4 * (3 * 3 * (3 * 32 + 32 * 32 + 32 * 64 + 64 * 64) + 32 + 32 + 64 + 64)
    assert list(tmp_path.iterdir()) == []  # the loop wrote only into its own temporary folder
