"""``oncolens bench`` reports only what it measured: a stopped or failing bench keeps its
figures, a figure never stands for a loop that timed nothing, and --warmup is what it says.

No timed assertions: only what was called, counted and written.
"""
import io
import json
import os

import pytest

from conftest import run_cli


def _openvino_installed():
    try:
        import openvino  # noqa: F401
        return True
    except ImportError:
        return False


def _bench(tiny_bundle, tiny_data, out, *flags):
    argv = ["bench", "--model", tiny_bundle, "--images", os.path.join(tiny_data, "test"),
            "--min-seconds", 0, "--warmup", 1, "--json", out] + list(flags)
    return run_cli(argv)


def _load(path):
    with io.open(path, encoding="utf-8") as fh:
        return json.load(fh)


@pytest.mark.skipif(not _openvino_installed(), reason="needs openvino")
def test_openvino_ceiling_times_calls_even_with_min_seconds_0(tiny_bundle, tiny_data, tmp_path):
    """With --min-seconds 0 the ceiling's loop ran no request and printed 0.0 img/s."""
    out = str(tmp_path / "b.json")
    code, stdout, err = _bench(tiny_bundle, tiny_data, out, "--backends", "openvino",
                               "--batch-sizes", "1", "--no-baseline")
    assert code == 0, err
    ceiling = _load(out)["runs"][0]["runtime_ceiling"]
    assert ceiling["calls"] >= 5 and ceiling["network_ips"] > 0
    assert " img/s network-only (openvino THROUGHPUT hint, " in stdout
    assert "{} calls timed)".format(ceiling["calls"]) in stdout
