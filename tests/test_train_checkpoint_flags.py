"""The flags that take a checkpoint file (train's --resume and --weights, export's --input)
given a folder: one line naming the flag and the checkpoints the folder holds (it used to be
"checkpoint not found: DIR", naming neither)."""
import os

import pytest

from conftest import FAST_TRAIN, run_cli
from oncolens.appliance.bundle import sha256_file as _sha

FAST = list(FAST_TRAIN)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    model_dir = str(tmp_path_factory.mktemp("flags") / "m")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", model_dir, "--epochs", 1] +
                             FAST)
    assert code == 0, err
    return model_dir


def _one_line(err, code):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_train_checkpoint_flags_given_a_folder(trained, tiny_data, tmp_path):
    new = str(tmp_path / "new")
    for flag, extra in (("--resume", []), ("--resume", ["-e"]), ("--weights", [])):
        code, out, err = run_cli(["train", tiny_data, "--model-dir", new, "--epochs", 2,
                                  flag, trained] + extra + FAST)
        _one_line(err, code)
        assert "{} {}: is a folder".format(flag, trained) in err
        assert os.path.join(trained, "checkpoint.pth.tar") in err
        assert os.path.join(trained, "model_best.pth.tar") in err
    # a folder without checkpoints says so; a missing file names the flag
    code, out, err = run_cli(["train", tiny_data, "--model-dir", new, "--epochs", 2,
                              "--resume", tiny_data] + FAST)
    _one_line(err, code)
    assert "--resume {}: is a folder".format(tiny_data) in err and "holds no" in err
    missing = os.path.join(trained, "nope.pth.tar")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", new, "--epochs", 2,
                              "--resume", missing] + FAST)
    _one_line(err, code)
    assert "--resume {}: checkpoint not found".format(missing) in err
    assert not os.path.exists(new)


def test_export_input_given_a_folder(trained, tmp_path):
    only_best = str(tmp_path / "best")
    os.makedirs(only_best)
    os.link(os.path.join(trained, "model_best.pth.tar"),
            os.path.join(only_best, "model_best.pth.tar"))
    code, out, err = run_cli(["export", "onnx", "--model-dir", trained, "--input",
                              only_best])
    _one_line(err, code)
    assert "--input {}: is a folder".format(only_best) in err
    assert os.path.join(only_best, "model_best.pth.tar") in err
    assert "checkpoint.pth.tar" not in err
    code, out, err = run_cli(["export", "onnx", "--model-dir", trained, "--input", "x.pth"])
    _one_line(err, code)
    assert "--input x.pth: checkpoint not found ({})".format(
        os.path.join(trained, "x.pth")) in err
    assert not [n for n in os.listdir(trained) if n.endswith(".onnx")]


def test_evaluate_takes_the_checkpoints_classes_without_labels_or_train(trained, tiny_data,
                                                                      tmp_path):
    """-e scores val/ only, yet a dataset without labels.txt needed a train/ folder to know
    its classes: the checkpoint's are taken, as long as val/'s class folders are those."""
    import shutil
    best = os.path.join(trained, "model_best.pth.tar")
    only_val = str(tmp_path / "only-val")
    shutil.copytree(os.path.join(tiny_data, "val"), os.path.join(only_val, "val"))
    code, out, err = run_cli(["train", only_val, "-e", "--resume", best] + FAST)
    assert code == 0, err
    assert "val accuracy" in out and best in out
    assert sorted(os.listdir(only_val)) == ["val"]  # -e writes nothing
    other = str(tmp_path / "other")
    shutil.copytree(only_val, other)
    os.rename(os.path.join(other, "val", "normal"), os.path.join(other, "val", "cyst"))
    code, out, err = run_cli(["train", other, "-e", "--resume", best] + FAST)
    _one_line(err, code)
    assert "benign, malignant, normal" in err and "benign, cyst, malignant" in err


def _epochs(model_dir):
    from oncolens.train.history import read_history
    return [int(r["epoch"]) for r in read_history(model_dir)]


def test_resume_of_an_earlier_checkpoint_of_the_same_folder(tiny_data, tmp_path):
    """--resume M/model_best.pth.tar --model-dir M, the best epoch before the last, replaced
    M/checkpoint.pth.tar and dropped history.csv's later rows with no word: refused without
    --overwrite, naming what would be lost; -e, another folder or --overwrite still go on."""
    import shutil
    model_dir = str(tmp_path / "m")
    train = ["train", tiny_data, "--model-dir", model_dir]
    code, out, err = run_cli(train + ["--epochs", 2] + FAST)
    assert code == 0, err
    early = str(tmp_path / "epoch2.pth.tar")
    shutil.copyfile(os.path.join(model_dir, "checkpoint.pth.tar"), early)
    latest = os.path.join(model_dir, "checkpoint.pth.tar")
    code, out, err = run_cli(train + ["--epochs", 4, "--resume", latest] + FAST)
    assert code == 0, err
    best = os.path.join(model_dir, "model_best.pth.tar")
    shutil.copyfile(early, best)  # the best epoch was the second
    before = _sha(latest)
    code, out, err = run_cli(train + ["--epochs", 6, "--resume", best] + FAST)
    _one_line(err, code)
    assert "epoch 2" in err and "epochs 3-4" in err and "--overwrite" in err
    assert latest in err
    assert _sha(latest) == before and _epochs(model_dir) == [1, 2, 3, 4]
    # -e writes nothing: allowed
    code, out, err = run_cli(train + ["--resume", best, "-e"] + FAST)
    assert code == 0, err
    # branching off into another folder keeps this one whole
    other = str(tmp_path / "branch")
    code, out, err = run_cli(["train", tiny_data, "--model-dir", other, "--epochs", 3,
                              "--resume", best] + FAST)
    assert code == 0, err
    assert _epochs(other) == [1, 2, 3] and _epochs(model_dir) == [1, 2, 3, 4]
    # --overwrite goes back as asked
    code, out, err = run_cli(train + ["--epochs", 3, "--resume", best, "--overwrite"] + FAST)
    assert code == 0, err
    assert _epochs(model_dir) == [1, 2, 3]
