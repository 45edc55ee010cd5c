"""Every writer that writes a file whole goes through outpaths' temporary files of their own
('.<name>.<random>.tmp'): a file of the user's named '<name>.tmp' (or the fixed name a writer
once used) beside the output is never replaced, moved over the output or removed, and two
runs writing one file never share a temporary file."""
import io
import json
import os

import pytest

from conftest import run_cli

USERS = u"the user's own file\n"


def _metrics(folder):
    from oncolens.appliance.evaluation import write_metrics_json
    path = os.path.join(folder, "metrics.json")
    write_metrics_json(path, {"accuracy": 1.0})
    return [path]


def _sidecar(folder):
    from oncolens.appliance.variants import write_sidecar
    write_sidecar(os.path.join(folder, "m.abc.int8.onnx"), {"precision": "int8"})
    return [os.path.join(folder, "m.abc.int8.json")]


def _calibration_cache(folder):
    from oncolens.export.calibrate import write_cache
    path = os.path.join(folder, "calib.cache")
    write_cache(path, b"TRT-8201-EntropyCalibration2\n")
    return [path]


WRITERS = {"evaluation.write_metrics_json": _metrics, "variants.write_sidecar": _sidecar,
           "calibrate.write_cache": _calibration_cache}


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("earlier", [False, True])
def test_a_users_file_named_like_the_old_temporary_file_survives(tmp_path, writer, earlier):
    """Each wrote '<name>.tmp' and moved it over the output: the user's file of that name was
    overwritten and then gone (or, written alongside, the output half another run's)."""
    folder = str(tmp_path)
    targets = [os.path.join(folder, name) for name in
               ("metrics.json", "m.abc.int8.json", "calib.cache")]
    for target in targets:
        with io.open(target + ".tmp", "w", encoding="utf-8") as fh:
            fh.write(USERS)
        if earlier:  # an output already there is replaced as before
            with io.open(target, "w", encoding="utf-8") as fh:
                fh.write(u"{}\n")  # a sidecar is read and merged: JSON
    written = WRITERS[writer](folder)
    for target in targets:
        with io.open(target + ".tmp", encoding="utf-8") as fh:
            assert fh.read() == USERS, target
    for path in written:
        with io.open(path, "rb") as fh:
            assert fh.read() not in (b"{}\n", USERS.encode("utf-8")), path
    left = sorted(set(os.listdir(folder)) - {os.path.basename(t) for t in targets} -
                  {os.path.basename(t) + ".tmp" for t in targets})
    assert left == []  # and no temporary file of the writer's


def test_bench_json_leaves_a_users_file_of_the_temporary_name(tiny_bundle, tiny_data, tmp_path):
    out = tmp_path / "bench.json"
    users = tmp_path / "bench.json.tmp"
    users.write_text(USERS)
    code, _, err = run_cli(["bench", "--model", tiny_bundle, "--images",
                            os.path.join(tiny_data, "test"), "--backends", "onnxruntime",
                            "--batch-sizes", "1", "--no-baseline", "--min-seconds", 0.01,
                            "--warmup", 1, "--json", out])
    assert code == 0, err
    assert users.read_text() == USERS and json.loads(out.read_text())["runs"]
    assert sorted(os.listdir(str(tmp_path))) == ["bench.json", "bench.json.tmp"]


def test_the_int8_copy_leaves_a_users_file_of_its_old_temporary_name(tiny_bundle, tiny_data,
                                                                     tmp_path):
    import shutil
    from oncolens.appliance import variants
    from oncolens.appliance.bundle import load_bundle
    model_dir = str(tmp_path / "m")
    shutil.copytree(tiny_bundle, model_dir, ignore=shutil.ignore_patterns("variants"))
    dst = variants.variant_path(load_bundle(model_dir), "int8")
    folder = os.path.dirname(dst)
    for name in (dst + ".tmp.onnx", dst + ".tmp", variants.sidecar_path(dst) + ".tmp"):
        with io.open(name, "w", encoding="utf-8") as fh:
            fh.write(USERS)
    before = set(os.listdir(folder))
    copy = variants.quantize_int8(load_bundle(model_dir), os.path.join(tiny_data, "train"),
                                  count=3)
    assert copy.model_path == dst and variants.read_sidecar(dst)["precision"] == "int8"
    for name in (dst + ".tmp.onnx", dst + ".tmp", variants.sidecar_path(dst) + ".tmp"):
        with io.open(name, encoding="utf-8") as fh:
            assert fh.read() == USERS, name
    dyn = variants.variant_path(load_bundle(model_dir), "dyn")  # the fp32 it starts from
    made = [dst, variants.sidecar_path(dst), dyn]
    assert set(os.listdir(folder)) - before == {os.path.basename(p) for p in made}
