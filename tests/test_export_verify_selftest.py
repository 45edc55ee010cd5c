"""oncolens export verify and oncolens selftest: here (no TensorRT: engine steps skipped,
with the reason) and through the tensorrt/pycuda STAND-IN (tests/trt_standin.py)."""
import json
import os
import shutil

import pytest

import trt_standin
from conftest import run_cli
from test_export_tensorrt_standin import _bundle_copy, dyn_bundle  # noqa: F401 (fixture)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONCOLENS_CACHE_DIR", str(tmp_path / "cache"))


def _with_checkpoint(src, tmp_path):
    d = _bundle_copy(src, tmp_path)
    shutil.copy(os.path.join(src, "model_best.pth.tar"), d)
    return d


def test_verify_without_tensorrt_compares_torch_and_onnx(tiny_bundle, tiny_data, tmp_path):
    d = _with_checkpoint(tiny_bundle, tmp_path)
    code, out, err = run_cli(["export", "verify", "--model-dir", d, "--images", tiny_data])
    assert code == 0, err
    assert "verify: 9 real images from {}".format(os.path.join(tiny_data, "val")) in out
    (row,) = [l for l in out.splitlines() if l.startswith("torch vs onnxruntime")]
    assert "agree 100.000% (>= 99.9%)" in row and row.endswith("ok")
    assert "skipped tensorrt: no engine listed in model.json" in out


def test_verify_precision_with_no_such_engine_names_the_ones_listed(tiny_bundle, tmp_path,
                                                                     cache):
    from oncolens.appliance import engines
    from oncolens.appliance.bundle import read_model_info, write_model_info
    d = _with_checkpoint(tiny_bundle, tmp_path)
    path = os.path.join(d, "model.json")
    info = read_model_info(path)
    engine = os.path.join(d, engines.engine_file_name("resnet18.onnx", 1, "8.2.1", "fp16"))
    engines.add_entry(info, engines.make_entry(engine, d, "8.2.1", "NVIDIA Tegra X1", "fp16", 1))
    write_model_info(path, info)
    code, out, err = run_cli(["export", "verify", "--model-dir", d, "--count", 2,
                              "--precision", "int8"])
    assert code == 3, err  # the int8 engine asked for was not compared: not a pass
    assert "skipped tensorrt: no int8 engine listed in model.json; it lists fp16 only " \
        "(oncolens export engine --precision int8)" in out
    assert "torch vs onnxruntime" in out and "no engine listed" not in out
    assert len(err.strip().splitlines()) == 1
    assert "--precision int8: no int8 engine was compared (no int8 engine listed" in err
    assert "the rows above are torch and onnxruntime only" in err


def _replace_engine_payload(engine_path, onnx_path):
    """Swap the ONNX inside a stand-in engine file (a wrong engine, same name)."""
    data = open(engine_path, "rb").read()
    head = data[:data.index(b"\n", len(trt_standin.MAGIC)) + 1]
    with open(engine_path, "wb") as fh:
        fh.write(head + open(onnx_path, "rb").read())


def test_verify_with_engines_and_a_wrong_engine_fails(dyn_bundle, tiny_data, tmp_path,  # noqa
                                                      cache, monkeypatch):
    from test_export_onnx import _corrupt_largest_2d_initializer
    trt_standin.install(monkeypatch, version="10.3.0.30", fast_int8=True)
    d = _with_checkpoint(dyn_bundle, tmp_path)
    for argv in (["--precision", "fp16"], ["--precision", "int8", "--calib-images", tiny_data,
                                          "--calib-batch", 3]):
        code, out, err = run_cli(["export", "engine", "--model-dir", d] + argv)
        assert code == 0, err
    code, out, err = run_cli(["export", "verify", "--model-dir", d, "--images", tiny_data])
    assert code == 0, err
    pairs = [l.split("  ")[0].strip() for l in out.splitlines() if " vs " in l]
    assert len(pairs) == 6 and any(p.startswith("onnxruntime vs tensorrt int8") for p in pairs)
    assert "(>= 97.0%)" in out and "(>= 99.0%)" in out
    bad = str(tmp_path / "bad.onnx")
    shutil.copy(os.path.join(d, "resnet18.onnx"), bad)
    _corrupt_largest_2d_initializer(bad)
    _replace_engine_payload(os.path.join(d, "resnet18.onnx.1.1.100300.GPU.FP16.engine"), bad)
    code, out, err = run_cli(["export", "verify", "--model-dir", d, "--images", tiny_data,
                              "--precision", "fp16"])
    assert code == 1 and "below threshold" in err and "tensorrt fp16" in err
    assert "FAIL" in out


def test_selftest_here_skips_engine_steps_and_says_why(tiny_bundle, tiny_data, tmp_path):
    d = _with_checkpoint(tiny_bundle, tmp_path)
    out_dir = str(tmp_path / "report")
    code, out, err = run_cli(["selftest", "--model-dir", d, "--images", tiny_data, "--frames", 5,
                              "--out", out_dir])
    assert code == 0, err
    doc = json.load(open(os.path.join(out_dir, "selftest.json")))
    steps = {s["step"]: s for s in doc["steps"]}
    assert steps["onnx check"]["status"] == "passed"
    speed = steps["speed onnxruntime (CPU/CUDA EP)"]
    assert speed["status"] == "passed" and speed["detail"]["network_fps"] > 0
    assert speed["detail"]["end_to_end_fps"] > 0
    for p in ("fp32", "fp16", "int8"):
        assert steps["engine " + p]["status"] == "skipped"
        assert "needs the Python package 'tensorrt'" in steps["engine " + p]["detail"]
        assert steps["verify " + p]["status"] == "skipped"
    assert doc["environment"]["tensorrt"] == "not installed"
    md = open(os.path.join(out_dir, "selftest.md")).read()
    assert "| engine fp16 | skipped |" in md and "| tensorrt | not installed |" in md
    code, out, err = run_cli(["selftest", "--model-dir", d, "--out", out_dir])
    assert code == 2 and "--overwrite" in err


def test_selftest_with_the_standin_builds_verifies_and_times_each_precision(
        dyn_bundle, tiny_data, tmp_path, cache, monkeypatch):  # noqa: F811
    trt_standin.install(monkeypatch, version="8.2.1.8", fast_int8=True)
    d = _with_checkpoint(dyn_bundle, tmp_path)
    code, out, err = run_cli(["selftest", "--model-dir", d, "--images", tiny_data, "--frames", 3])
    assert code == 0, err
    doc = json.load(open(os.path.join(d, "selftest", "selftest.json")))
    status = {s["step"]: s["status"] for s in doc["steps"]}
    assert set(status.values()) == {"passed"}, status
    assert len(status) == 2 + 3 * 3
    assert doc["environment"]["tensorrt"] == "8.2.1.8"


def test_verify_a_bare_folder_uses_the_onnx_input_size(tiny_bundle, tiny_data, tmp_path):
    """No model.json, a 32 px ONNX: the images are prepared at 32 px, not 224."""
    d = tmp_path / "bare"
    d.mkdir()
    for f in ("resnet18.onnx", "labels.txt", "model_best.pth.tar"):
        shutil.copy(os.path.join(tiny_bundle, f), str(d))
    code, out, err = run_cli(["export", "verify", "--model-dir", str(d), "--images", tiny_data,
                              "--count", 4])
    assert code == 0, err
    assert "torch vs onnxruntime" in out and "agree 100.000%" in out


def test_verify_with_nothing_to_compare_says_so_and_fails(tiny_bundle, tmp_path):
    """Only the ONNX: no checkpoint, no engine. Not a pass: exit 3 and why."""
    d = _bundle_copy(tiny_bundle, tmp_path)
    code, out, err = run_cli(["export", "verify", "--model-dir", d, "--count", 4])
    assert code == 3, (out, err)
    assert "nothing was compared: only onnxruntime ran" in err and "no checkpoint" in err
    assert len(err.strip().splitlines()) == 1
    assert "passed" not in out + err and " ok" not in out


@pytest.mark.parametrize("extra, flag", [(["--count", "0"], "--count"),
                                         (["--count", "-3"], "--count"),
                                         (["--min-agreement-fp16", "1.5"],
                                          "--min-agreement-fp16")])
def test_verify_bad_numbers_are_one_line(tiny_bundle, extra, flag):
    code, out, err = run_cli(["export", "verify", "--model-dir", tiny_bundle] + extra)
    assert code == 2 and err.count(flag) == 1 and len(err.strip().splitlines()) == 1


def test_selftest_unusable_out_is_one_line_before_any_step(tiny_bundle, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text(u"x")
    for out_dir, message in [(str(blocker), "is a file: expected a folder"),
                             (str(blocker / "sub"), "is a file, not a folder")]:
        code, out, err = run_cli(["selftest", "--model-dir", tiny_bundle, "--out", out_dir])
        assert code == 2 and "--out" in err and message in err, err
        assert len(err.strip().splitlines()) == 1 and not out
    code, out, err = run_cli(["selftest", "--model-dir", tiny_bundle, "--count", 0])
    assert code == 2 and "--count" in err


@pytest.mark.parametrize("value, says", [("", "expected one or more of fp32, fp16, int8"),
                                         (",", "expected one or more of fp32, fp16, int8"),
                                         ("fp16,int8,fp16", "fp16 is named twice")])
def test_selftest_precisions_that_name_nothing_or_one_twice_are_one_line(tiny_bundle, tmp_path,
                                                                         value, says):
    """--precisions "" ran no engine step at all and passed (exit 0, a report with the ONNX
    steps alone); a precision named twice was built, verified and timed twice."""
    out_dir = tmp_path / "report"
    code, out, err = run_cli(["selftest", "--model-dir", tiny_bundle, "--out", out_dir,
                              "--precisions", value])
    assert code == 2 and "--precisions" in err and says in err, err
    assert len(err.strip().splitlines()) == 1 and not out_dir.exists()


def test_selftest_stopped_while_writing_leaves_the_earlier_report_whole(tiny_bundle, tmp_path,
                                                                       monkeypatch, cache):
    """selftest.json was written in place, then the Markdown made and written: Ctrl-C (or a
    full disk) in between left the new JSON beside the earlier Markdown, a pair from two
    runs; a full disk left half a JSON under its name."""
    from oncolens.export import selftest_env
    out_dir = tmp_path / "report"
    out_dir.mkdir()
    for name in ("selftest.json", "selftest.md"):
        (out_dir / name).write_text(u"earlier")

    def interrupted(detail):
        raise KeyboardInterrupt
    monkeypatch.setattr(selftest_env, "_summary", interrupted)
    code, out, err = run_cli(["selftest", "--model-dir", tiny_bundle, "--out", out_dir,
                              "--count", 2, "--frames", 2, "--overwrite"])
    assert code != 0 and "interrupted" in err and "Traceback" not in err, err
    assert sorted(os.listdir(str(out_dir))) == ["selftest.json", "selftest.md"]
    for name in ("selftest.json", "selftest.md"):
        assert (out_dir / name).read_text() == u"earlier", name


def test_verify_names_a_listed_engine_whose_file_is_gone(dyn_bundle, tiny_data, tmp_path,  # noqa
                                                         cache, monkeypatch):
    """An engine deleted by hand (model.json still lists it) was a FileNotFoundError
    traceback out of 'export verify'."""
    trt_standin.install(monkeypatch, version="8.2.1.8", fast_int8=True)
    d = _with_checkpoint(dyn_bundle, tmp_path)
    code, out, err = run_cli(["export", "engine", "--model-dir", d, "--precision", "fp16"])
    assert code == 0, err
    engine = os.path.join(d, "resnet18.onnx.1.1.8201.GPU.FP16.engine")
    os.remove(engine)
    code, out, err = run_cli(["export", "verify", "--model-dir", d, "--images", tiny_data,
                              "--count", 5])
    assert code == 0, err
    assert "skipped tensorrt fp16 resnet18.onnx.1.1.8201.GPU.FP16.engine: listed in " \
        "model.json, but {} is missing".format(engine) in out
    assert "torch vs onnxruntime" in out
    code, out, err = run_cli(["export", "verify", "--model-dir", d, "--images", tiny_data,
                              "--count", 5, "--precision", "fp16"])
    assert code == 3 and "is missing" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("where", ["steps", "report"])
def test_selftest_stopped_before_its_report_leaves_no_folder(tiny_bundle, tmp_path,
                                                            monkeypatch, cache, where):
    """The report folder was made before the steps ran: Ctrl-C during them (or while the
    report was being made) left it empty behind, with the folders made above it."""
    from oncolens.export import selftest_env

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(selftest_env, "run_steps" if where == "steps" else "_summary",
                        interrupted)
    out_dir = tmp_path / "new" / "report"
    code, out, err = run_cli(["selftest", "--model-dir", tiny_bundle, "--out", out_dir,
                              "--count", 2, "--frames", 2])
    assert code == 130 and "interrupted" in err, err
    assert not (tmp_path / "new").exists()


def test_an_image_the_preprocessing_refuses_is_skipped_by_name(tiny_data, tmp_path, caplog):
    """verify, check and selftest skip an image the model's preprocessing refuses (too
    elongated); the warning named no file ('skipped: the image is 80000x1 pixels ...')."""
    import glob
    import logging
    import numpy as np
    from oncolens.appliance.imageio import write_image
    from oncolens.appliance.preprocess import Preprocessor, imagenet_preprocess
    from oncolens.export.images import load_batch
    strip = str(tmp_path / "strip.png")
    write_image(strip, np.full((1, 80000, 3), 90, dtype=np.uint8))
    good = sorted(glob.glob(os.path.join(tiny_data, "val", "*", "*.png")))[:2]
    caplog.set_level(logging.WARNING)
    batch, used = load_batch([good[0], strip, good[1]],
                             Preprocessor(imagenet_preprocess(32), (3, 32, 32)))
    assert batch.shape == (2, 3, 32, 32) and used == good
    assert "skipped: {}: the image is 80000x1 pixels".format(strip) in caplog.text
