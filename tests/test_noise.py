"""The portable noise generator: deterministic, standard normal, and frozen by a golden fixture
that the Swift and Kotlin runtimes are tested against too."""
import json

import numpy as np

from compiler.contract import noise
from support import REPO

GOLDEN = REPO / "tests/fixtures/golden/noise.json"


def test_same_seed_same_noise_and_seeds_differ():
    a = noise.gaussian(7, (1, 4, 8, 8))
    assert np.array_equal(a, noise.gaussian(7, (1, 4, 8, 8)))
    assert not np.array_equal(a, noise.gaussian(8, (1, 4, 8, 8)))
    assert a.dtype == np.float32


def test_noise_is_standard_normal():
    x = noise.gaussian(0, (200_000,)).astype(np.float64)
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
    assert abs(np.mean(x > 1.0) - 0.158655) < 0.005  # upper tail of N(0, 1)


def test_odd_sizes_are_a_prefix_of_the_stream():
    assert np.array_equal(noise.gaussian(3, (7,)), noise.gaussian(3, (8,))[:7])


def test_golden_fixture_matches_generator():
    golden = json.loads(GOLDEN.read_text())
    assert golden["algorithm"] == noise.ALGORITHM
    for case in golden["cases"]:
        got = noise.gaussian(case["seed"], tuple(case["shape"]))
        assert got.ravel().tolist() == case["values"], case["seed"]
    for case in golden["splitmix64"]:
        got = noise.splitmix64(case["seed"], np.arange(len(case["values"]), dtype=np.uint64))
        assert [int(v) for v in got] == case["values"]
