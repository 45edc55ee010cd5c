"""Every writer that writes a file whole goes through outpaths' temporary files of their own
('.<name>.<random>.tmp'): a file of the user's named '<name>.tmp' (or the fixed name a writer
once used) beside the output is never replaced, moved over the output or removed, and two
runs writing one file never share a temporary file."""
import io
import json
import os
import stat

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


def _torch_export(folder):
    import torch
    from oncolens.export.onnx_export import torch_onnx_export
    path = os.path.join(folder, "tiny.onnx")
    torch_onnx_export(torch.nn.Conv2d(3, 2, 3).eval(), torch.zeros(1, 3, 8, 8), path, 11)
    return [path]


def _service_files(folder):
    from oncolens.appliance.service_cli import write_files
    env, unit = os.path.join(folder, "oncolens"), os.path.join(folder, "oncolens.service")
    write_files([(env, u"ONCOLENS_TOKEN=\n", 0o600), (unit, u"[Unit]\n", 0o644)], True)
    return [env, unit]


WRITERS = {"evaluation.write_metrics_json": _metrics, "variants.write_sidecar": _sidecar,
           "calibrate.write_cache": _calibration_cache,
           "onnx_export.torch_onnx_export": _torch_export, "service_cli.write_files": _service_files}


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("earlier", [False, True])
def test_a_users_file_named_like_the_old_temporary_file_survives(tmp_path, writer, earlier):
    """Each wrote '<name>.tmp' and moved it over the output: the user's file of that name was
    overwritten and then gone (or, written alongside, the output half another run's)."""
    folder = str(tmp_path)
    targets = [os.path.join(folder, name) for name in
               ("metrics.json", "m.abc.int8.json", "calib.cache", "tiny.onnx", "oncolens",
                "oncolens.service")]
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


def test_the_environment_file_is_never_readable_by_others_while_it_is_written(tmp_path,
                                                                             monkeypatch):
    """Even with umask 0 its temporary file is made 0600, before a byte of the token is in
    it, and the unit's 0644; the user's 'oncolens.tmp' (0666) beside it is not touched."""
    from oncolens.appliance import outpaths
    from oncolens.appliance.service_cli import write_files
    env, unit = str(tmp_path / "oncolens"), str(tmp_path / "oncolens.service")
    made = []
    real = outpaths.temp_path

    def spy(*args, **kwargs):
        path = real(*args, **kwargs)
        made.append((os.path.basename(args[0]), stat.S_IMODE(os.stat(path).st_mode)))
        return path
    monkeypatch.setattr(outpaths, "temp_path", spy)
    with open(env + ".tmp", "w") as fh:
        fh.write("ONCOLENS_TOKEN=mine\n")
    os.chmod(env + ".tmp", 0o666)
    old = os.umask(0)
    try:
        write_files([(env, "ONCOLENS_TOKEN=s3cret\n", 0o600), (unit, "[Unit]\n", 0o644)], True)
    finally:
        os.umask(old)
    assert made == [("oncolens", 0o600), ("oncolens.service", 0o644)]
    assert stat.S_IMODE(os.stat(env).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(unit).st_mode) == 0o644
    with open(env + ".tmp") as fh:
        assert fh.read() == "ONCOLENS_TOKEN=mine\n"


def test_service_install_moves_both_files_in_or_neither(tmp_path, monkeypatch):
    """The second move failing put the first file in place alone (a new unit with the old
    environment file); now the first is put back and the error names the file, not its
    temporary name."""
    import errno
    from oncolens.appliance import outpaths
    from oncolens.appliance.errors import UsageError
    from oncolens.appliance.service_cli import write_files
    env, unit = str(tmp_path / "oncolens"), str(tmp_path / "oncolens.service")
    for path in (env, unit):
        with open(path, "w") as fh:
            fh.write("old\n")
    real = os.replace

    def replace(src, dst):
        if dst == unit and src.endswith(".tmp"):  # the new unit's move, not the undo
            raise OSError(errno.ENOSPC, "No space left on device", src, None, dst)
        real(src, dst)
    monkeypatch.setattr(outpaths.os, "replace", replace)
    with pytest.raises(UsageError, match=r"cannot write .*/oncolens\.service: No space left"):
        write_files([(env, "new\n", 0o600), (unit, "new\n", 0o644)], True)
    for path in (env, unit):
        with open(path) as fh:
            assert fh.read() == "old\n", path
    assert sorted(os.listdir(str(tmp_path))) == ["oncolens", "oncolens.service"]


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


def test_export_leaves_a_users_file_of_the_old_staging_names(tiny_bundle, tmp_path,
                                                             monkeypatch):
    """The export was staged as '.<arch>.unchecked.onnx' (and torch wrote its '.tmp'): a file
    of that name, the user's or another export's into the same folder still being checked,
    was overwritten and then removed or moved over the ONNX."""
    import shutil
    from oncolens.appliance.outpaths import temp_target
    from oncolens.export import onnx_export
    model_dir = tmp_path / "m"
    shutil.copytree(tiny_bundle, str(model_dir), ignore=shutil.ignore_patterns("variants"))
    theirs = [".resnet18.unchecked.onnx", ".resnet18.unchecked.onnx.tmp", "resnet18.onnx.tmp"]
    for name in theirs:
        (model_dir / name).write_text(USERS)
    before = sorted(os.listdir(str(model_dir)))
    staged = []
    real = onnx_export.torch_onnx_export

    def spy(module, example, path, *args, **kwargs):
        staged.append(os.path.basename(path))
        return real(module, example, path, *args, **kwargs)
    monkeypatch.setattr(onnx_export, "torch_onnx_export", spy)
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--overwrite"])
    assert code == 0, err
    for name in theirs:
        assert (model_dir / name).read_text() == USERS, name
    assert sorted(os.listdir(str(model_dir))) == before
    assert len(staged) == 1 and staged[0].endswith(".unchecked.onnx")
    assert temp_target(staged[0]) == "resnet18.onnx"
