"""oncolens export onnx and the bundle: the checkpoint is the truth for classes and
resolution, a failed export leaves the bundle as it was, --output never replaces the
bundle's own files, and a checkpoint that is not what it says is one line."""
import os
import shutil

import pytest

from conftest import run_cli
from test_export_onnx import _copy_bundle, _random_checkpoint, _session


def _stale_bundle_files(model_dir, arch, labels, size):
    """model.json and labels.txt of another training run, left in the folder."""
    from oncolens.appliance.bundle import new_model_info, write_labels, write_model_info
    from oncolens.appliance.preprocess import imagenet_preprocess
    write_model_info(os.path.join(model_dir, "model.json"),
                     new_model_info(arch, labels, size, imagenet_preprocess(size)))
    write_labels(os.path.join(model_dir, "labels.txt"), labels)


def test_the_checkpoint_is_the_truth_for_classes_and_resolution(tmp_path, caplog):
    from oncolens.appliance.bundle import read_labels, read_model_info
    model_dir = str(tmp_path / "m")
    _random_checkpoint(model_dir, "simple-cnn", 48, classes=("cat", "dog"))
    _stale_bundle_files(model_dir, "simple-cnn", ["benign", "malignant", "normal"], 32)
    before = _snapshot(model_dir)
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--check-count", 4])
    assert code == 2 and len(err.strip().splitlines()) == 1  # another model's: --overwrite
    assert "model.json describes another model than" in err and "--overwrite" in err
    assert _snapshot(model_dir) == before
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--check-count", 4,
                              "--overwrite"])
    assert code == 0, err
    sess = _session(os.path.join(model_dir, "simple-cnn.onnx"))
    assert sess.get_inputs()[0].shape == [1, 3, 48, 48] and sess.get_outputs()[0].shape == [1, 2]
    info = read_model_info(os.path.join(model_dir, "model.json"))
    assert info["labels"] == ["cat", "dog"] and info["input"]["shape"] == [3, 48, 48]
    assert read_labels(os.path.join(model_dir, "labels.txt")) == ["cat", "dog"]
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "48x48" in warned and "32x32" in warned
    assert "'cat', 'dog'" in warned and "'benign', 'malignant', 'normal'" in warned


def test_what_the_checkpoint_lacks_comes_from_model_json(tmp_path):
    import torch
    from oncolens.appliance.archs import build_model
    from oncolens.appliance.bundle import read_model_info
    model_dir = str(tmp_path / "m")
    os.makedirs(model_dir)
    torch.save({"arch": "simple-cnn", "num_classes": 3,
                "state_dict": build_model("simple-cnn", 3).state_dict()},
               os.path.join(model_dir, "model_best.pth.tar"))
    _stale_bundle_files(model_dir, "simple-cnn", ["a", "b", "c"], 40)
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--check-count", 4])
    assert code == 0, err
    info = read_model_info(os.path.join(model_dir, "model.json"))
    assert info["labels"] == ["a", "b", "c"] and info["input"]["shape"] == [3, 40, 40]
    _stale_bundle_files(model_dir, "simple-cnn", ["a", "b"], 40)  # another model's
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--output", "x.onnx"])
    assert code == 2 and "has 3 outputs but" in err and "lists 2 classes" in err
    assert not os.path.exists(os.path.join(model_dir, "x.onnx"))


def _snapshot(model_dir):
    return dict((f, open(os.path.join(model_dir, f), "rb").read())
                for f in sorted(os.listdir(model_dir)))


def test_a_failed_export_leaves_the_bundle_as_it_was(tiny_bundle, tmp_path, monkeypatch):
    model_dir = _copy_bundle(tiny_bundle, tmp_path)
    blocker = tmp_path / "model" / "afile"
    blocker.write_text(u"x")
    before = _snapshot(model_dir)
    for extra, message in [(["--images", str(tmp_path / "nonexist")], "--images"),
                           (["--tolerance", "-1"], "--tolerance"),
                           (["--check-count", "0"], "--check-count"),
                           (["--output", str(blocker / "x.onnx")], "is a file, not a folder")]:
        argv = ["export", "onnx", "--model-dir", model_dir, "--output", "r2.onnx"] + extra
        code, _, err = run_cli(argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert _snapshot(model_dir) == before
    monkeypatch.setattr("oncolens.export.check.verdict", lambda *a: "forced to fail")
    # an --output in folders still to be made left them behind, empty, though "nothing was
    # written"
    for extra in (["--output", "r2.onnx"], ["--overwrite"],
                  ["--output", os.path.join(model_dir, "new", "deep", "r2.onnx")]):
        code, _, err = run_cli(["export", "onnx", "--model-dir", model_dir] + extra)
        assert code == 1 and "forced to fail" in err and "nothing was written" in err
        assert len(err.strip().splitlines()) == 1
        assert sorted(os.listdir(model_dir)) == sorted(before)  # no folder made for it
        assert _snapshot(model_dir) == before  # no new ONNX, no leftover, model.json as it was


@pytest.mark.parametrize("output, says", [
    ("model_best.pth.tar", "is the checkpoint being exported"),
    ("checkpoint.pth.tar", "is a checkpoint's name"),
    ("model.json", "is the bundle's model.json"),
    (os.path.join("{model_dir}", ".", "labels.txt"), "is the bundle's labels.txt"),
    # written, and recorded in model.json, under an engine's name: evaluate and classify
    # then opened the bundle with TensorRT
    ("resnet18.onnx.1.1.8201.GPU.FP16.engine", "is a TensorRT engine's name"),
    ("model.plan", "is a TensorRT engine's name"),
])
def test_output_never_replaces_the_checkpoint_or_the_bundle_files(tiny_bundle, tmp_path,
                                                                   output, says):
    model_dir = _copy_bundle(tiny_bundle, tmp_path)
    shutil.copy(os.path.join(model_dir, "model_best.pth.tar"),
                os.path.join(model_dir, "checkpoint.pth.tar"))
    before = _snapshot(model_dir)
    output = output.format(model_dir=model_dir)
    for extra in ([], ["--overwrite"]):  # 'already exists: pass --overwrite' is no advice here
        code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--output",
                                  output] + extra)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
        assert _snapshot(model_dir) == before


@pytest.mark.parametrize("output, says", [
    # written as an ONNX under an image's name, and recorded so in model.json
    ("x.jpg", "--output x.jpg: expected an ONNX file name ending in .onnx"),
    ("resnet18", "--output resnet18: expected an ONNX file name ending in .onnx"),
    # written outside the bundle, and recorded in model.json as '../x.onnx': a copy of the
    # model folder on the device had no ONNX
    (os.path.join("..", "x.onnx"), "outside the model folder"),
    ("ABSOLUTE", "outside the model folder"),
])
def test_output_is_an_onnx_file_inside_the_model_folder(tiny_bundle, tmp_path, output, says):
    model_dir = _copy_bundle(tiny_bundle, tmp_path)
    if output == "ABSOLUTE":
        output = str(tmp_path / "elsewhere" / "x.onnx")
    before = _snapshot(model_dir)
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--output", output,
                              "--overwrite"])
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert output in err and _snapshot(model_dir) == before
    assert sorted(os.listdir(str(tmp_path))) == ["model"]  # nothing written beside it


def test_output_that_is_a_link_out_of_the_model_folder_is_called_a_link(tiny_bundle,
                                                                        tmp_path):
    """An --output that is itself a link in the model folder, pointing outside it, was
    refused as "outside the model folder", which its path is not: the line now says it is
    a link and where it points."""
    model_dir = _copy_bundle(tiny_bundle, tmp_path)
    (tmp_path / "elsewhere.onnx").write_bytes(b"another model")
    os.symlink(os.path.join("..", "elsewhere.onnx"), os.path.join(model_dir, "linked.onnx"))
    before = _snapshot(model_dir)
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--output",
                              "linked.onnx", "--overwrite"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--output linked.onnx: a link to {} ({}), which is outside the model folder {}" \
        .format(os.path.join("..", "elsewhere.onnx"), str(tmp_path / "elsewhere.onnx"),
                model_dir) in err
    assert "remove the link or give another name" in err
    assert _snapshot(model_dir) == before and os.path.islink(os.path.join(model_dir,
                                                                          "linked.onnx"))
    assert (tmp_path / "elsewhere.onnx").read_bytes() == b"another model"


def test_check_before_any_export_says_the_onnx_is_missing(tiny_bundle, tmp_path):
    model_dir = _copy_bundle(tiny_bundle, tmp_path)
    os.remove(os.path.join(model_dir, "resnet18.onnx"))
    code, out, err = run_cli(["export", "check", "--model-dir", model_dir])
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "ONNX model not found: {}".format(os.path.join(model_dir, "resnet18.onnx")) in err
    assert "run 'oncolens export onnx' first" in err and "checker" not in err


def test_export_into_a_folder_that_does_not_exist_yet(tiny_bundle, tmp_path):
    from oncolens.appliance.bundle import read_model_info
    model_dir = _copy_bundle(tiny_bundle, tmp_path)
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--output",
                              os.path.join(model_dir, "sub", "new.onnx"), "--check-count", 2])
    assert code == 0, err
    assert os.path.isfile(os.path.join(model_dir, "sub", "new.onnx"))
    info = read_model_info(os.path.join(model_dir, "model.json"))
    assert info["onnx"]["file"] == os.path.join("sub", "new.onnx")
    assert not [f for f in os.listdir(os.path.join(model_dir, "sub")) if "unchecked" in f]


def test_a_checkpoint_in_a_sub_folder_is_recorded_by_its_path_for_check_and_verify(
        tiny_bundle, tmp_path):
    from oncolens.appliance.bundle import read_model_info
    model_dir = _copy_bundle(tiny_bundle, tmp_path)
    _random_checkpoint(os.path.join(model_dir, "runs"), "resnet18", 32)  # other weights
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--input",
                              os.path.join("runs", "model_best.pth.tar"), "--overwrite"])
    assert code == 0, err
    info = read_model_info(os.path.join(model_dir, "model.json"))
    assert info["onnx"]["checkpoint"] == os.path.join("runs", "model_best.pth.tar")
    # check and verify compare the ONNX with that checkpoint, not model_best.pth.tar beside it
    code, out, err = run_cli(["export", "check", "--model-dir", model_dir])
    assert code == 0, err
    code, out, err = run_cli(["export", "verify", "--model-dir", model_dir, "--count", 4])
    assert code == 0 and "torch vs onnxruntime" in out, err


@pytest.mark.parametrize("edit, says", [
    (dict(arch="resnet18"), "its weights are not those of arch 'resnet18' with 3 classes "
                            "(missing conv1.weight"),
    (dict(arch="vgg99"), "unknown architecture 'vgg99'"),
    (dict(classes=["a", "b"]), "lists 2 classes (a, b) but records num_classes 3"),
    (dict(classes=None, num_classes=None), "records neither 'classes' nor 'num_classes'"),
    # a traceback from torch.zeros; labels 'a', 'b', 'c' in silence; model.json refused
    # only after the new ONNX had taken its name
    (dict(resolution=-5), "'resolution' must be a positive whole number of pixels, got -5"),
    (dict(classes="abc", num_classes=3), "'classes' must be a list of class names"),
    (dict(classes=[1, 2, 3]), "'classes' must be a list of class names"),
])
def test_a_checkpoint_that_is_not_what_it_says_is_one_line(tmp_path, edit, says):
    import torch
    model_dir = str(tmp_path / "m")
    _random_checkpoint(model_dir, "simple-cnn", 32)
    path = os.path.join(model_dir, "model_best.pth.tar")
    ckpt = torch.load(path, weights_only=False)
    ckpt.update(edit)
    torch.save(ckpt, path)
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir])
    assert code == 1 and says in err and path in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert os.listdir(model_dir) == ["model_best.pth.tar"]  # nothing written


@pytest.mark.parametrize("fails", ["writing model.json", "moving model.json",
                                   "moving labels.txt"])
def test_a_failure_after_the_onnx_is_ready_leaves_the_bundle_old_or_new_whole(
        tiny_bundle, tmp_path, monkeypatch, fails):
    """A full disk between moving the new ONNX into place and writing model.json left the
    new ONNX with the old record (evaluate then took it for stale and ran the checkpoint).
    Now model.json (and labels.txt) are written first and the three moved together: a
    failure anywhere leaves the bundle exactly as it was."""
    import errno
    import io
    from oncolens.appliance.outpaths import temp_target
    model_dir = _copy_bundle(tiny_bundle, tmp_path)
    with open(os.path.join(model_dir, "labels.txt"), "w") as fh:
        fh.write(u"normal\nbenign\nmalignant\n")  # another order: the export rewrites it
    before = _snapshot(model_dir)
    full = OSError(errno.ENOSPC, "No space left on device")
    real_open, real_replace = io.open, os.replace

    def open_(path, mode="r", *args, **kwargs):
        name = os.path.basename(str(path))
        if fails == "writing model.json" and "w" in mode and \
                (temp_target(name) or name) == "model.json":
            raise full
        return real_open(path, mode, *args, **kwargs)

    def replace(src, dst):
        name = os.path.basename(str(src))  # the new file's move, not the old one's back
        if fails.startswith("moving ") and name.endswith(".tmp") and \
                temp_target(name) == fails[7:] == os.path.basename(str(dst)):
            raise full
        return real_replace(src, dst)
    monkeypatch.setattr(io, "open", open_)
    monkeypatch.setattr(os, "replace", replace)
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--no-activation",
                              "--overwrite", "--check-count", 2])
    assert code == 1 and "No space left on device" in err, err
    assert len(err.strip().splitlines()) == 1
    assert _snapshot(model_dir) == before  # the old ONNX, model.json, labels.txt; nothing else
    monkeypatch.undo()
    code, out, err = run_cli(["export", "onnx", "--model-dir", model_dir, "--no-activation",
                              "--overwrite", "--check-count", 2])
    assert code == 0, err
    from oncolens.appliance.bundle import read_labels, read_model_info
    from oncolens.train.evaluate import stale_onnx
    info = read_model_info(os.path.join(model_dir, "model.json"))
    assert info["output"]["activation"] == "none"
    assert read_labels(os.path.join(model_dir, "labels.txt")) == info["labels"]
    assert stale_onnx(model_dir, info)[1] is None


def test_output_with_a_folder_is_read_as_onnx_export_py_reads_it(tiny_bundle, tmp_path,
                                                                   monkeypatch):
    """onnx_export.py puts a bare --output name into --model-dir and takes a path with a
    folder as given: its users' --model-dir=models/x --output=models/x/resnet18.onnx made
    models/x/models/x/resnet18.onnx here, and the bundle named a copy nobody looks at."""
    from oncolens.appliance.bundle import read_model_info
    monkeypatch.chdir(str(tmp_path))
    _copy_bundle(tiny_bundle, tmp_path)  # tmp_path/model
    model_dir = os.path.join("model")
    for output, where in [(os.path.join("model", "again.onnx"), "again.onnx"),
                          ("bare.onnx", "bare.onnx")]:
        code, out, err = run_cli(["export", "onnx", "--model-dir=" + model_dir,
                                  "--output=" + output, "--check-count", 2])
        assert code == 0, err
        assert os.path.isfile(os.path.join("model", where)), where
        assert read_model_info(os.path.join("model", "model.json"))["onnx"]["file"] == where
        assert "exported {}".format(os.path.join("model", where)) in out
    assert not os.path.exists(os.path.join("model", "model"))
    assert not os.path.exists("bare.onnx")


@pytest.mark.parametrize("model_arg, output_arg", [("linked", os.path.join("model", "x.onnx")),
                                                   ("model", os.path.join("linked", "x.onnx"))])
def test_output_through_a_link_to_the_model_folder_is_recorded_inside_it(
        tiny_bundle, tmp_path, monkeypatch, model_arg, output_arg):
    """--model-dir and --output reaching one folder, one of them through a link, passed the
    inside-the-folder check (made on real paths) but model.json recorded the ONNX by the
    path from one spelling to the other, '../../model/x.onnx': no runtime found it in a copy
    of the bundle."""
    from oncolens.appliance.bundle import load_bundle, read_model_info
    monkeypatch.chdir(str(tmp_path))
    _copy_bundle(tiny_bundle, tmp_path)  # tmp_path/model
    os.symlink("model", "linked")
    code, out, err = run_cli(["export", "onnx", "--model-dir=" + model_arg,
                              "--output=" + output_arg, "--check-count", 2])
    assert code == 0, err
    assert read_model_info(os.path.join("model", "model.json"))["onnx"]["file"] == "x.onnx"
    shutil.copytree("model", "copy")
    assert load_bundle("copy").onnx_path == os.path.join("copy", "x.onnx")
