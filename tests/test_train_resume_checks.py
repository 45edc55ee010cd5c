"""--resume is checked against the new run before anything is written: the same network,
input size and classes in the same order (a mismatch used to train on, or crash deep in
torch)."""
import os
import shutil

import pytest

from conftest import FAST_TRAIN, run_cli
from oncolens.appliance.bundle import sha256_file as _sha

FAST = list(FAST_TRAIN)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    model_dir = str(tmp_path_factory.mktemp("resume") / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1] +
                             FAST)
    assert code == 0, err
    return model_dir


def _refused(err, code):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def _with_labels(tiny_data, root, labels, drop=()):
    data = str(root)
    shutil.copytree(tiny_data, data)
    with open(os.path.join(data, "labels.txt"), "w") as fh:
        fh.write("".join(c + "\n" for c in labels))
    for cls in drop:
        for split in ("train", "val", "test"):
            shutil.rmtree(os.path.join(data, split, cls))
    return data


def test_resume_refuses_another_resolution_or_arch(trained, tiny_data):
    ckpt = os.path.join(trained, "checkpoint.pth.tar")
    before = _sha(os.path.join(trained, "model_best.pth.tar"))
    args = ["train", tiny_data, "--model-dir", trained, "--epochs", 2, "--resume", ckpt]
    code, out, err = run_cli(args + FAST[:-2] + ["--arch", "simple-cnn", "--resolution", 48])
    _refused(err, code)
    assert "--resolution 32" in err and "48" in err and ckpt in err
    code, out, err = run_cli(args + FAST[:-2] + ["--arch", "resnet18"])
    _refused(err, code)
    assert "simple-cnn" in err and "--arch is resnet18" in err
    assert _sha(os.path.join(trained, "model_best.pth.tar")) == before


def test_resume_refuses_classes_in_another_order_or_another_set(trained, tiny_data, tmp_path):
    ckpt = os.path.join(trained, "checkpoint.pth.tar")
    before = _sha(os.path.join(trained, "model_best.pth.tar"))
    reordered = _with_labels(tiny_data, tmp_path / "reordered", ["normal", "benign", "malignant"])
    code, out, err = run_cli(["train", reordered, "--model-dir", trained, "--epochs", 2,
                              "--resume", ckpt] + FAST)
    _refused(err, code)
    assert "benign, malignant, normal" in err and "normal, benign, malignant" in err
    assert "order" in err
    fewer = _with_labels(tiny_data, tmp_path / "fewer", ["benign", "malignant"], ["normal"])
    code, out, err = run_cli(["train", fewer, "--model-dir", trained, "--epochs", 2,
                              "--resume", ckpt, "-e"] + FAST)
    _refused(err, code)
    assert "benign, malignant, normal" in err and "benign, malignant" in err
    assert _sha(os.path.join(trained, "model_best.pth.tar")) == before
    # the same run, resumed as it was made, still goes on
    code, out, err = run_cli(["train", tiny_data, "--model-dir", trained, "--epochs", 2,
                              "--resume", ckpt] + FAST)
    assert code == 0, err
    # -e scores the checkpoint on val/ and says so, without claiming a model was written
    code, out, err = run_cli(["train", tiny_data, "--model-dir", trained, "--resume", ckpt,
                              "-e"] + FAST)
    assert code == 0, err
    assert "val accuracy" in out and ckpt in out and "model in" not in out


def test_resume_and_evaluate_refuse_another_clahe(trained, tiny_data, tmp_path):
    """CLAHE is part of the model's preprocessing: a --resume or -e without the checkpoint's
    own used to train on (or score) other images than the model was made for, and the
    resumed run's model.json dropped preprocess.clahe."""
    model_dir = str(tmp_path / "clahe")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1,
                              "--clahe", "--clahe-clip", 3] + FAST)
    assert code == 0, err
    ckpt = os.path.join(model_dir, "checkpoint.pth.tar")
    before = _sha(os.path.join(model_dir, "model.json"))
    resume = ["train", tiny_data, "--model-dir", model_dir, "--epochs", 2, "--resume", ckpt]
    for extra in ([], ["--clahe"], ["-e"]):
        code, out, err = run_cli(resume + extra + FAST)
        _refused(err, code)
        assert "--clahe --clahe-clip 3" in err and ckpt in err
    assert _sha(os.path.join(model_dir, "model.json")) == before
    code, out, err = run_cli(resume + ["--clahe", "--clahe-clip", 3] + FAST)
    assert code == 0, err
    import json
    with open(os.path.join(model_dir, "model.json")) as fh:
        assert json.load(fh)["preprocess"]["clahe"] == {"clip": 3.0, "tile": 8}
    # and the other way round: a run without CLAHE is not resumed with it
    code, out, err = run_cli(["train", tiny_data, "--resume",
                              os.path.join(trained, "checkpoint.pth.tar"), "-e",
                              "--clahe"] + FAST)
    _refused(err, code)
    assert "trained without --clahe" in err


def test_resume_keeps_the_optimizer_and_takes_this_runs_settings(trained, tiny_data,
                                                                 tmp_path):
    """A --resume with another --optimizer ended in a KeyError traceback (AdamW's state into
    SGD) after the new --model-dir had been written; --wd given on a resume was replaced by
    the checkpoint's own while model.json recorded the new value."""
    import torch
    ckpt = os.path.join(trained, "checkpoint.pth.tar")
    new = str(tmp_path / "sgd")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", new, "--epochs", 2,
                              "--resume", ckpt, "--optimizer", "sgd"] + FAST)
    _refused(err, code)
    assert "--optimizer adamw" in err and not os.path.exists(new)
    wd = str(tmp_path / "wd")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", wd, "--epochs", 4,
                              "--resume", ckpt, "--wd", 0.5] + FAST)
    assert code == 0, err
    saved = torch.load(os.path.join(wd, "checkpoint.pth.tar"), weights_only=False)
    assert sorted(g["weight_decay"] for g in saved["optimizer"]["param_groups"]) == [0.0, 0.5]
    assert saved["optimizer"]["state"]  # the moments went on
    # a checkpoint whose optimizer has other parameter groups (jetson-inference's one SGD
    # group) resumes its weights with a fresh optimizer, not a ValueError traceback
    from oncolens.appliance.archs import build_model
    net = build_model("simple-cnn", 3)
    net.load_state_dict(saved["state_dict"])
    jetson = dict(epoch=1, arch="simple-cnn", resolution=32, classes=saved["classes"],
                  num_classes=3, state_dict=saved["state_dict"], accuracy=0.3, loss=1.0,
                  optimizer=torch.optim.SGD(net.parameters(), 0.1, momentum=0.9).state_dict())
    os.makedirs(str(tmp_path / "jetson"))
    jetson_ckpt = str(tmp_path / "jetson" / "checkpoint.pth.tar")
    torch.save(jetson, jetson_ckpt)
    code, out, err = run_cli(["train", tiny_data, "--model-dir", str(tmp_path / "jetson"),
                              "--epochs", 2, "--resume", jetson_ckpt, "--optimizer", "sgd",
                              "--lr", 0.01] + FAST)
    assert code == 0, err


def test_weights_with_resume_is_refused(trained, tiny_data, tmp_path):
    """--weights was silently ignored by a --resume (or -e), which goes on from its own."""
    ckpt = os.path.join(trained, "checkpoint.pth.tar")
    for extra in ([], ["-e"]):
        code, out, err = run_cli(["train", tiny_data, "--model-dir", str(tmp_path / "w"),
                                  "--epochs", 5, "--resume", ckpt, "--weights",
                                  os.path.join(trained, "model_best.pth.tar")] + extra + FAST)
        _refused(err, code)
        assert "--weights" in err and "--resume" in err
    assert not os.path.exists(str(tmp_path / "w"))


def test_zero_init_residual_is_a_property_of_the_starting_weights(tiny_data, tmp_path):
    """A --resume of a --zero-init-residual run recorded "zero_init_residual": false in
    model.json, and --zero-init-residual given to a resume (which ignored it) recorded true."""
    import json
    model_dir = str(tmp_path / "zero")
    fast = FAST[:-2] + ["--arch", "resnet18"]
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1,
                              "--zero-init-residual"] + fast)
    assert code == 0, err
    ckpt = os.path.join(model_dir, "checkpoint.pth.tar")
    resume = ["train", tiny_data, "--model-dir", model_dir, "--epochs", 2, "--resume", ckpt]
    code, out, err = run_cli(resume + ["--zero-init-residual"] + fast)
    _refused(err, code)
    assert "--zero-init-residual" in err and "--resume" in err
    code, out, err = run_cli(resume + fast)
    assert code == 0, err
    with open(os.path.join(model_dir, "model.json")) as fh:
        assert json.load(fh)["training"]["zero_init_residual"] is True


def test_start_epoch_with_resume_is_said_to_be_left_aside(tiny_data, tmp_path, caplog):
    """--resume goes on from the checkpoint's epoch (as train.py's does): a --start-epoch
    given with it was left aside without a word. (A one-epoch run of its own: the module's
    ``trained`` folder is taken further by other tests.)"""
    import csv
    first, new = str(tmp_path / "first"), str(tmp_path / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", first, "--epochs", 1] + FAST)
    assert code == 0, err
    with caplog.at_level("WARNING"):
        code, out, err = run_cli(["train", tiny_data, "--model-dir", new, "--epochs", 3,
                                  "--start-epoch", 2, "--resume",
                                  os.path.join(first, "checkpoint.pth.tar")] + FAST)
    assert code == 0, err
    said = [r.getMessage() for r in caplog.records if "--start-epoch 2" in r.getMessage()]
    assert len(said) == 1 and "epoch 1" in said[0], said
    with open(os.path.join(new, "history.csv")) as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2", "3"]
