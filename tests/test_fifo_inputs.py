"""A FIFO (named pipe) named like an image in an input folder: every command that walks
folders for images hung on it for ever (opening a FIFO to read waits for a writer). Now each
refuses it unopened, "not a regular file", the way it already reports an unreadable image,
and goes on with the rest; a symbolic link to a regular image still works.

Every command runs in a child process with a timeout, so that a hang fails the test instead
of hanging the run."""
import csv
import io
import os
import shutil
import subprocess
import sys
import threading

import pytest

from conftest import cli_subprocess_cmd, subprocess_env

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo (POSIX)")

TIMEOUT = 300  # seconds: a generous limit on a busy machine; a hang is for ever
NOT_REGULAR = "not a regular file (a FIFO)"


def _run(argv, cwd=None):
    """(exit code, stdout + stderr) of ``oncolens ARGV``; fails when it does not end."""
    return _child(cli_subprocess_cmd(*argv), "oncolens " + str(argv[0]), cwd)


def _child(cmd, what, cwd=None):
    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=subprocess_env(), cwd=cwd, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail("{} did not end within {} s: it hung on the FIFO".format(what, TIMEOUT))
    return done.returncode, done.stdout.decode("utf-8", "replace")


def _add_fifo(folder, link=True):
    """A FIFO named like an image in ``folder`` and (``link``) a symbolic link to a real
    image of the folder beside it; ``folder``."""
    real = os.path.join(folder, sorted(os.listdir(folder))[0])
    os.mkfifo(os.path.join(folder, "pipe.png"))
    if link:
        os.symlink(os.path.abspath(real), os.path.join(folder, "linked.png"))
    return folder


def _with_fifo(tiny_data, dst, split="test", link=True):
    """A copy of the synthetic dataset with ``_add_fifo`` in ``split/benign/``."""
    shutil.copytree(tiny_data, dst)
    _add_fifo(os.path.join(dst, split, "benign"), link)
    return dst


def test_not_regular_says_what_a_path_is(tmp_path):
    from oncolens.appliance.imageio import not_regular
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG")
    os.symlink(str(image), str(tmp_path / "link.png"))
    os.mkfifo(str(tmp_path / "pipe.png"))
    os.symlink(str(tmp_path / "pipe.png"), str(tmp_path / "to_pipe.png"))
    assert not_regular(str(image)) is None and not_regular(str(tmp_path / "link.png")) is None
    assert not_regular(str(tmp_path / "pipe.png")) == NOT_REGULAR
    assert not_regular(str(tmp_path / "to_pipe.png")) == NOT_REGULAR  # judged by its target
    assert not_regular(str(tmp_path / "missing.png")) is None  # open() says why
    assert not_regular(str(tmp_path)) == "not a regular file (a folder)"


def test_batch_records_the_fifo_and_classifies_the_rest(tiny_bundle, tiny_data, tmp_path):
    data = _with_fifo(tiny_data, str(tmp_path / "data"))
    results = str(tmp_path / "results.csv")
    code, out = _run(["batch", os.path.join(data, "test"), "--model", tiny_bundle,
                      "--results", results, "--no-progress"])
    assert code == 1, out  # some files failed
    with io.open(results, encoding="utf-8", newline="") as fh:
        rows = {r["relpath"]: r for r in csv.DictReader(fh)}
    fifo = rows[os.path.join("benign", "pipe.png")]
    assert fifo["label"] == "" and NOT_REGULAR in fifo["error"] and "pipe.png" in fifo["error"]
    assert rows[os.path.join("benign", "linked.png")]["label"] in ("benign", "malignant", "normal")
    assert [r for r in rows.values() if r["error"]] == [fifo]
    assert len(rows) == 3 * 3 + 2


def test_batch_and_classify_refuse_a_fifo_named_as_the_input(tiny_bundle, tmp_path):
    """Named alone it was 'input not found'; now its failure is recorded, as any file's."""
    fifo = str(tmp_path / "pipe.png")
    os.mkfifo(fifo)
    results = str(tmp_path / "results.csv")
    code, out = _run(["batch", fifo, "--model", tiny_bundle, "--results", results,
                      "--no-progress"])
    assert code == 1 and "pipe.png: " + NOT_REGULAR in out, out
    with io.open(results, encoding="utf-8", newline="") as fh:
        assert NOT_REGULAR in list(csv.DictReader(fh))[0]["error"]
    code, out = _run(["classify", "--model", tiny_bundle, "--headless", fifo])
    assert code == 1 and "pipe.png: " + NOT_REGULAR in out, out


def test_classify_a_folder_names_the_fifo_and_classifies_the_rest(tiny_bundle, tiny_data,
                                                                  tmp_path):
    data = _with_fifo(tiny_data, str(tmp_path / "data"))
    code, out = _run(["classify", "--model", tiny_bundle, "--headless",
                      os.path.join(data, "test", "benign")])
    assert code == 1, out
    assert os.path.join("benign", "pipe.png") + ": " + NOT_REGULAR in out
    assert out.count("imagenet: ") == 3 + 1  # the three images and the link


def test_data_check_and_split_report_the_fifo(tiny_data, tmp_path):
    """data check said 'empty file' (a FIFO's size is 0): now what it is."""
    data = _with_fifo(tiny_data, str(tmp_path / "data"), split="train")
    code, out = _run(["data", "check", data])
    assert code == 1, out
    assert "error: {}: {}".format(os.path.join("train", "benign", "pipe.png"), NOT_REGULAR) in out
    flat = str(tmp_path / "flat")
    shutil.copytree(os.path.join(tiny_data, "train"), flat)
    _add_fifo(os.path.join(flat, "benign"))
    code, out = _run(["data", "split", flat, str(tmp_path / "split")])
    assert code == 0, out
    with io.open(str(tmp_path / "split" / "splits.csv"), encoding="utf-8", newline="") as fh:
        fates = {r["path"]: r for r in csv.DictReader(fh)}
    assert "dropped: unreadable" in fates[os.path.join("benign", "pipe.png")].values()
    assert os.path.join("benign", "linked.png") in fates
    copied = [n for _, _, names in os.walk(str(tmp_path / "split")) for n in names]
    assert "pipe.png" not in copied and "linked.png" in copied


def test_train_refuses_the_dataset_naming_the_fifo(tiny_data, tmp_path):
    data = _with_fifo(tiny_data, str(tmp_path / "data"), split="train", link=False)
    model = str(tmp_path / "model")
    code, out = _run(["train", data, "--model-dir", model, "--resolution", 32, "--epochs", 1,
                      "-b", 6, "-j", 0, "--no-pretrained"])
    assert code == 2, out
    fifo = os.path.join(data, "train", "benign", "pipe.png")  # the reason read cleanly, not
    assert out.strip().splitlines()[-1] == (                   # wrapped in parentheses again
        "oncolens train: error: {} cannot be used as an image: {}: not opened (expected an "
        "image file); remove or replace it".format(fifo, NOT_REGULAR))
    assert not os.path.exists(os.path.join(model, "model_best.pth.tar"))


def test_evaluate_lists_the_fifo_as_unreadable(tiny_bundle, tiny_data, tmp_path):
    data = _with_fifo(tiny_data, str(tmp_path / "data"))
    code, out = _run(["evaluate", os.path.join(data, "test"), "--model-dir", tiny_bundle,
                      "--out", str(tmp_path / "eval")])
    assert code == 1, out
    fifo = os.path.join(data, "test", "benign", "pipe.png")  # named once, its reason unwrapped
    assert "  unreadable: {}: {}: not opened (expected an image file)\n".format(
        fifo, NOT_REGULAR) in out
    assert os.path.isfile(str(tmp_path / "eval" / "report.md"))


def test_export_check_images_skip_the_fifo(tiny_bundle, tiny_data, tmp_path):
    data = _with_fifo(tiny_data, str(tmp_path / "data"))
    folder = os.path.join(data, "test", "benign")
    code, out = _run(["export", "check", "--model-dir", tiny_bundle, "--images", folder])
    assert code == 0, out
    assert "skipped: " in out and "pipe.png: " + NOT_REGULAR in out
    assert "4 real images from" in out


def test_bench_skips_the_fifo_and_says_why(tiny_bundle, tiny_data, tmp_path):
    """bench hung on the FIFO in its 16-bit scan of --images (a plain open); its summary named
    the skipped files without the reason."""
    data = _with_fifo(tiny_data, str(tmp_path / "data"))
    images = os.path.join(data, "test")
    with open(os.path.join(images, "normal", "bad.png"), "wb") as fh:
        fh.write(b"nope!")
    code, out = _run(["bench", "--model", tiny_bundle, "--images", images, "--backends",
                      "onnxruntime", "--batch-sizes", 1, "--min-seconds", 0.05, "--warmup", 1,
                      "--no-baseline"])
    assert code == 0, out
    summary = out[out.index("skipped 2 unreadable files, not timed:"):]
    assert "  {}: {}".format(os.path.join(images, "benign", "pipe.png"), NOT_REGULAR) in summary
    assert "  {}: not a decodable image".format(os.path.join(images, "normal", "bad.png")) \
        in summary


def test_serve_bench_refuses_a_fifo_image_unopened(tmp_path):
    """The serve load-test client read --image with a plain open(): a FIFO hung it."""
    fifo = str(tmp_path / "pipe.png")
    os.mkfifo(fifo)
    code, out = _child([sys.executable, "-m", "oncolens.appliance.web.bench", "--url",
                        "http://127.0.0.1:9/", "--image", fifo, "--requests", "1"],
                       "the serve bench")
    assert code == 2 and out.strip() == "oncolens serve bench: error: --image {}: {}: not " \
        "opened (expected an image file)".format(fifo, NOT_REGULAR), out


def test_calibration_images_skip_the_fifo(tiny_data, tmp_path):
    """TensorRT's calibration batches and onnxruntime's int8 calibration reader."""
    data = _with_fifo(tiny_data, str(tmp_path / "data"))
    script = "\n".join([
        "import sys",
        "from oncolens.export.calibrate import CalibrationBatches",
        "from oncolens.appliance.pipeline import iter_image_files",
        "from oncolens.appliance.variants import _Calibration",
        "files = list(iter_image_files(sys.argv[1]))",
        "batches = CalibrationBatches([p for p, _ in files], lambda rgb: rgb * 1.0, 2)",
        "print('batches', len(list(batches)), 'skipped', batches.skipped)",
        "reader = _Calibration(files, lambda rgb: rgb * 1.0, 'input_0')",
        "print('read', sum(1 for _ in iter(reader.get_next, None)))",
    ])
    folder = os.path.join(data, "test", "benign")
    code, out = _child([sys.executable, "-c", script, folder], "calibration")
    assert code == 0, out
    assert "batches 2 skipped [{!r}]".format(os.path.join(folder, "pipe.png")) in out
    assert "read 4" in out and out.count(NOT_REGULAR) == 2


def _in_thread(call):
    """What ``call()`` returned or raised, run in a thread joined for at most TIMEOUT s: a
    reader that waits on the FIFO fails the test (and is let go by a writer opening it)."""
    got = []

    def run():
        try:
            got.append(("returned", call()))
        except Exception as exc:
            got.append(("raised", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(TIMEOUT)  # a guard against a hang, not a timing assertion
    return thread, got


def _release(fifo):
    """Let a reader blocked in opening ``fifo`` go: a writer opens it and closes it."""
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("reader", ["read_bytes", "load_item", "bench_image", "low_bits",
                                    "describe_file", "naive_open"])
def test_a_file_swapped_for_a_fifo_after_its_check_is_refused_without_waiting(
        tmp_path, monkeypatch, reader):
    """The readers looked at the path (stat) and then opened it by name: a file swapped for
    a FIFO between the two blocked the open for ever. The stat check is taken away here, as
    the swap would pass it; the open itself must not wait, and the refusal is the same line."""
    from oncolens.appliance import imageio, lowbits, pipeline
    from oncolens.appliance.errors import ImageReadError, UsageError
    from oncolens.appliance.bench_naive import NaiveTorch
    from oncolens.appliance.web.bench import read_image_file
    from oncolens.train import scan
    from PIL import Image
    fifo = str(tmp_path / "pipe.png")
    os.mkfifo(fifo)
    for module in (imageio, lowbits, scan):  # the swap came after the stat check
        monkeypatch.setattr(module, "not_regular", lambda path: None)
    naive = NaiveTorch.__new__(NaiveTorch)  # its image reading alone, no model loaded
    naive.Image = Image
    calls = {"read_bytes": lambda: imageio.read_bytes(fifo),
             "load_item": lambda: pipeline.load_item(0, fifo, "pipe.png", None),
             "bench_image": lambda: read_image_file(fifo),
             "low_bits": lambda: lowbits.LowBitsWarning().scan([fifo]),
             "describe_file": lambda: scan.describe_file(fifo),  # data check, as before
             "naive_open": lambda: naive.open_image(fifo)}
    thread, got = _in_thread(calls[reader])
    if thread.is_alive():
        _release(fifo)
        thread.join(TIMEOUT)
        pytest.fail("{} waited on the FIFO: opened by name after its check".format(reader))
    refused = "{}: {}: not opened (expected an image file)".format(fifo, NOT_REGULAR)
    how, what = got[0]
    if reader == "load_item":
        assert how == "returned" and what.error == refused and what.tensor is None
    elif reader == "low_bits":
        assert how == "returned" and what is None  # skipped: left to the caller's report
    elif reader == "describe_file":  # data check's reason, as for a FIFO seen by its stat
        assert how == "returned" and what == {"bytes": 0, "error": NOT_REGULAR}
    else:
        assert how == "raised" and str(what) == (
            "--image " if reader == "bench_image" else "") + refused
        assert isinstance(what, UsageError if reader == "bench_image" else ImageReadError)


def test_a_regular_image_is_read_through_the_checked_descriptor(tmp_path):
    """The reading that refuses a FIFO still reads a regular image, and a link to one."""
    import cv2
    import numpy as np
    from oncolens.appliance.imageio import read_bytes, read_image
    image = str(tmp_path / "x.png")
    cv2.imwrite(image, np.full((5, 7, 3), 200, np.uint8))
    os.symlink(image, str(tmp_path / "link.png"))
    with open(image, "rb") as fh:
        assert read_bytes(str(tmp_path / "link.png")) == fh.read()
    assert read_image(image).shape == (5, 7, 3)
    from PIL import Image
    from oncolens.appliance.bench_naive import NaiveTorch
    from oncolens.train.scan import describe_file
    naive = NaiveTorch.__new__(NaiveTorch)
    naive.Image = Image
    assert naive.open_image(str(tmp_path / "link.png")).size == (7, 5)
    info = describe_file(str(tmp_path / "link.png"))
    assert (info["bytes"], info["mode"], info["width"]) == (os.path.getsize(image), "RGB", 7)
