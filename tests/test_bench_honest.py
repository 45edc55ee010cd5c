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


class _Recording(object):
    """A backend that records the batch size of every call, over ONNX Runtime's answers."""

    def __init__(self, backend):
        self.backend, self.calls = backend, []

    def infer(self, batch):
        self.calls.append(int(batch.shape[0]))
        return self.backend.infer(batch)


@pytest.mark.parametrize("warmup, batch_size, before", [(0, 4, []), (1, 4, [4]),
                                                         (2, 2, [2, 2]), (3, 1, [1, 1, 1])])
def test_end_to_end_warms_up_with_warmup_calls_of_the_rows_batch(tiny_bundle, tiny_data,
                                                                 warmup, batch_size, before):
    """The end-to-end warm-up was max(--warmup, batch) images: one call at batch 4 whatever
    --warmup said, 0 included; it is now --warmup calls at the row's batch size."""
    from oncolens.appliance import variants
    from oncolens.appliance.backends import open_backend
    from oncolens.appliance.bench_measure import end_to_end
    from oncolens.appliance.bundle import load_bundle
    from oncolens.appliance.pipeline import iter_image_files
    from oncolens.appliance.preprocess import Preprocessor
    bundle = load_bundle(tiny_bundle)
    files = list(iter_image_files(os.path.join(tiny_data, "test")))  # 9 images
    timed = [batch_size] * (len(files) // batch_size) + (
        [len(files) % batch_size] if len(files) % batch_size else [])
    with open_backend("onnxruntime", variants.dynamic_batch(bundle)) as backend:
        spy = _Recording(backend)
        got = end_to_end(spy, Preprocessor.from_bundle(bundle), bundle.labels, files,
                         batch_size, 0, warmup)
    assert got["images"] == len(files) == 9
    assert spy.calls == before + timed


def _naive_loop_raises(monkeypatch, exc, always):
    """The naive loop's classify raises ``exc``: on every image (``always``), else only in
    its one-thread run (its first loop's figures made)."""
    import torch

    from oncolens.appliance.bench_naive import NaiveTorch
    real = NaiveTorch.classify

    def classify(self, path):
        if always or torch.get_num_threads() == 1:
            raise exc
        return real(self, path)
    monkeypatch.setattr(NaiveTorch, "classify", classify)


@pytest.mark.parametrize("when, rows_kept", [("always", 0), ("one thread", 1)])
def test_the_naive_loop_failing_is_a_recorded_failure(tiny_bundle, tiny_data, tmp_path,
                                                      monkeypatch, when, rows_kept):
    """A torch error inside the naive loop (a CUDA out of memory) was a traceback: no table,
    no --json. It is now a FAILED row as a backend's is: the backends measured, exit 1."""
    _naive_loop_raises(monkeypatch, RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB"),
                       always=when == "always")
    out = str(tmp_path / "b.json")
    code, stdout, err = _bench(tiny_bundle, tiny_data, out, "--backends", "onnxruntime",
                               "--batch-sizes", "1")
    assert code == 1, err
    doc = _load(out)
    reason = "RuntimeError: CUDA out of memory."
    assert doc["failed"] == [{"backend": "torch-eager", "precision": "fp32",
                              "rows_kept": rows_kept, "reason": reason}]
    assert doc["baseline"]["failed"] == reason
    assert [(r["backend"], r["batch_size"]) for r in doc["runs"]] == [("onnxruntime", 1)]
    assert "FAILED torch-eager fp32 while measuring, after {} of its rows: {}".format(
        rows_kept, reason) in stdout
    assert ("torch-eager (naive)" in stdout) == bool(rows_kept)
    assert (doc["runs"][0]["speedup_vs_baseline"] is None) == (not rows_kept)


@pytest.fixture
def sigterm_guard():
    """A SIGTERM handler that fails the test instead of killing pytest, should bench not
    take SIGTERM over itself while it runs."""
    import signal

    def not_taken(signum, frame):
        raise RuntimeError("SIGTERM reached the test's handler: bench did not take it")

    previous = signal.signal(signal.SIGTERM, not_taken)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("how, status, said", [("ctrl-c", 130, "Ctrl-C"),
                                               ("sigterm", 143, "SIGTERM")])
def test_a_stopped_bench_prints_and_writes_the_figures_measured(
        tiny_bundle, tiny_data, tmp_path, monkeypatch, sigterm_guard, how, status, said):
    """Ctrl-C or SIGTERM during a bench of several backends/precisions lost every figure
    measured so far: no table, no --json. The rows measured are now printed and written
    whole, marked interrupted with what was being measured, and the exit is 130 or 143."""
    import signal

    from oncolens.appliance.backends.ort import OnnxRuntimeBackend
    real = OnnxRuntimeBackend.infer

    def infer(self, batch):
        if batch.shape[0] == 2:  # the second batch size of the first backend x precision
            if how == "ctrl-c":
                raise KeyboardInterrupt()
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, batch)

    monkeypatch.setattr(OnnxRuntimeBackend, "infer", infer)
    out = str(tmp_path / "b.json")
    code, stdout, err = _bench(tiny_bundle, tiny_data, out, "--backends", "onnxruntime,torch",
                               "--batch-sizes", "1,2")
    assert code == status, err
    doc = _load(out)
    assert doc["interrupted"] is True and doc["interrupted_by"] == {
        "ctrl-c": "SIGINT", "sigterm": "SIGTERM"}[how]
    assert doc["interrupted_while"] == {"step": "backend", "what": "onnxruntime fp32",
                                        "backend": "onnxruntime", "precision": "fp32",
                                        "rows_kept": 1}
    assert doc["not_measured"] == [{"backend": "torch", "precision": "fp32"}]
    assert [(r["backend"], r["batch_size"]) for r in doc["runs"]] == [("onnxruntime", 1)]
    run = doc["runs"][0]
    assert run["network_ips"] > 0 and run["end_to_end_ips"] > 0 and run["speedup_vs_baseline"]
    assert doc["baseline"]["end_to_end_ips"] > 0 and doc["loadavg_end"]
    assert "torch-eager (naive)" in stdout and "figures: {}".format(out) in stdout
    assert "INTERRUPTED ({}) while measuring onnxruntime fp32, after 1 of its rows; not " \
        "measured: torch fp32".format(said) in stdout
    assert err.splitlines()[-1] == "oncolens bench: interrupted{}: the figures measured so " \
        "far are in the table above and in {}, marked interrupted".format(
            " by SIGTERM" if how == "sigterm" else "", out)


def test_a_bench_stopped_before_any_figure_leaves_the_json_as_it_was(
        tiny_bundle, tiny_data, tmp_path, monkeypatch):
    """Stopped during the fp32 reference, nothing was measured: an existing --json is not
    replaced by an empty record (even with --overwrite), and the line says so."""
    from oncolens.appliance import bench

    def reference(*args, **kwargs):
        raise KeyboardInterrupt()

    monkeypatch.setattr(bench, "reference", reference)
    out = tmp_path / "b.json"
    out.write_text(u'{"earlier": true}\n')
    code, stdout, err = _bench(tiny_bundle, tiny_data, str(out), "--overwrite")
    assert code == 130, err
    assert out.read_text() == u'{"earlier": true}\n' and stdout == ""
    assert err.splitlines()[-1] == "oncolens bench: interrupted: nothing was measured yet, " \
        "so no table, and --json {} was not written".format(out)


def test_a_bench_stopped_in_the_naive_loop_keeps_its_first_figures(tiny_bundle, tiny_data,
                                                                     tmp_path, monkeypatch):
    """Stopped in the naive loop's one-thread run: the first loop's figures are kept, and
    every backend x precision is named as not measured."""
    _naive_loop_raises(monkeypatch, KeyboardInterrupt(), always=False)
    out = str(tmp_path / "b.json")
    code, stdout, err = _bench(tiny_bundle, tiny_data, out, "--backends", "onnxruntime",
                               "--batch-sizes", "1")
    assert code == 130, err
    doc = _load(out)
    assert doc["runs"] == [] and doc["baseline"]["end_to_end_ips"] > 0
    assert doc["baseline"]["interrupted"] is True and "single_thread" not in doc["baseline"]
    assert doc["interrupted_while"] == {"step": "baseline",
                                        "what": "the naive torch loop (baseline)"}
    assert doc["not_measured"] == [{"backend": "onnxruntime", "precision": "fp32"}]
    assert "torch-eager (naive)" in stdout
    assert "INTERRUPTED (Ctrl-C) while measuring the naive torch loop (baseline); not " \
        "measured: onnxruntime fp32" in stdout


def test_a_bench_stopped_after_its_last_row_keeps_every_figure(tiny_bundle, tiny_data,
                                                               tmp_path, monkeypatch,
                                                               sigterm_guard):
    """SIGTERM after every row was measured, while the run was being closed (the GPU's
    name, which on a CUDA run imports torch: seconds on a Nano, and the closing load),
    lost every figure: no table, no --json, only 'interrupted by SIGTERM'. The figures are
    now printed and written, marked interrupted while closing, nothing named as not
    measured."""
    import signal

    from oncolens.appliance import bench
    real, calls = bench.loadavg, []

    def loadavg():
        calls.append(1)
        if len(calls) == 2:   # the closing one (the first is the start's)
            os.kill(os.getpid(), signal.SIGTERM)
        return real()

    monkeypatch.setattr(bench, "loadavg", loadavg)
    out = str(tmp_path / "b.json")
    code, stdout, err = _bench(tiny_bundle, tiny_data, out, "--backends", "onnxruntime",
                               "--batch-sizes", "1", "--no-baseline")
    assert code == 143, err
    doc = _load(out)
    assert doc["interrupted"] is True and doc["interrupted_by"] == "SIGTERM"
    assert doc["interrupted_while"]["step"] == "closing"
    assert doc["not_measured"] == []
    assert [(r["backend"], r["batch_size"]) for r in doc["runs"]] == [("onnxruntime", 1)]
    assert doc["runs"][0]["network_ips"] > 0 and doc["runs"][0]["end_to_end_vs_network"]
    assert "INTERRUPTED (SIGTERM) while closing the run" in stdout
    assert err.splitlines()[-1].startswith("oncolens bench: interrupted by SIGTERM: the "
                                           "figures measured so far are in the table above")


def test_a_backend_failing_midway_keeps_the_rows_measured_and_the_json(tiny_bundle, tiny_data,
                                                                      tmp_path, monkeypatch):
    """A runtime error at the second batch size (a GPU out of memory at a larger batch) was
    a traceback: every figure measured so far was lost and no --json written."""
    from oncolens.appliance.backends.ort import OnnxRuntimeBackend
    real = OnnxRuntimeBackend.infer

    def infer(self, batch):
        if batch.shape[0] == 2:
            raise RuntimeError("out of memory\nallocating 2 images")
        return real(self, batch)

    monkeypatch.setattr(OnnxRuntimeBackend, "infer", infer)
    out = str(tmp_path / "b.json")
    code, stdout, err = _bench(tiny_bundle, tiny_data, out, "--backends", "onnxruntime",
                               "--batch-sizes", "1,2", "--no-baseline")
    assert code == 1, err
    doc = _load(out)
    assert [r["batch_size"] for r in doc["runs"]] == [1]
    assert doc["failed"] == [{"backend": "onnxruntime", "precision": "fp32", "rows_kept": 1,
                              "reason": "RuntimeError: out of memory"}]
    assert "FAILED onnxruntime fp32 while measuring, after 1 of its rows: RuntimeError: out " \
        "of memory" in stdout
    assert "figures: {}".format(out) in stdout


def _stop_while_writing(monkeypatch, calls):
    """SIGTERM arrives as --json is being written (inside replace_text, before the file)."""
    import signal

    from oncolens.appliance import bench_cli
    real = bench_cli.replace_text

    def replace_text(path, text):
        calls.append(path)
        os.kill(os.getpid(), signal.SIGTERM)
        real(path, text)
    monkeypatch.setattr(bench_cli, "replace_text", replace_text)


def test_sigterm_while_a_finished_bench_writes_its_json_waits_for_the_file(
        tiny_bundle, tiny_data, tmp_path, monkeypatch, sigterm_guard):
    """SIGTERM in the few milliseconds of a finished bench's --json write left the earlier
    file (the figures lost) and exit 143 with nothing said of them. The stop now waits for
    the file to be whole, then ends the run, saying where the figures are."""
    calls = []
    _stop_while_writing(monkeypatch, calls)
    out = tmp_path / "b.json"
    out.write_text(u'{"earlier": true}\n')
    code, stdout, err = _bench(tiny_bundle, tiny_data, str(out), "--backends", "onnxruntime",
                               "--batch-sizes", "1", "--no-baseline", "--overwrite")
    assert code == 143 and calls == [str(out)], err
    doc = _load(str(out))
    assert doc["interrupted"] is False and doc["runs"][0]["network_ips"] > 0
    assert "figures: {}".format(out) in stdout
    assert err.splitlines()[-1] == "oncolens bench: interrupted by SIGTERM: the bench had " \
        "finished: its figures are in the table above and in {}".format(out)


def test_a_second_stop_while_a_stopped_bench_writes_its_json_changes_nothing(
        tiny_bundle, tiny_data, tmp_path, monkeypatch, sigterm_guard):
    """Ctrl-C, then SIGTERM while the figures measured so far are written: the file is
    written whole and the run ends as the first stop says (130)."""
    from oncolens.appliance.backends.ort import OnnxRuntimeBackend
    real = OnnxRuntimeBackend.infer

    def infer(self, batch):
        if batch.shape[0] == 2:
            raise KeyboardInterrupt()
        return real(self, batch)
    monkeypatch.setattr(OnnxRuntimeBackend, "infer", infer)
    calls = []
    _stop_while_writing(monkeypatch, calls)
    out = str(tmp_path / "b.json")
    code, stdout, err = _bench(tiny_bundle, tiny_data, out, "--backends", "onnxruntime",
                               "--batch-sizes", "1,2", "--no-baseline")
    assert code == 130 and calls == [out], err
    doc = _load(out)
    assert doc["interrupted"] is True and doc["interrupted_by"] == "SIGINT"
    assert err.splitlines()[-1] == "oncolens bench: interrupted: the figures measured so far " \
        "are in the table above and in {}, marked interrupted".format(out)
