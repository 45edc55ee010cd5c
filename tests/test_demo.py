"""``oncolens demo``: the whole pipeline end to end, and --overwrite only on a demo's folder.

The demo runs as its own process, as a user runs it (training, export and the live loop
leave nothing behind in the test process)."""
import os
import subprocess
import sys

from oncolens.appliance.classify_copies import RECORD

SMALL = ["--epochs", "1", "--per-class", "6", "--size", "48", "--resolution", "32"]


def run_cli(argv):
    done = subprocess.run([sys.executable, "-m", "oncolens"] + [str(a) for a in argv],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    return done.returncode, done.stdout, done.stderr


def test_demo_runs_end_to_end_and_overwrite_replaces_only_a_demo(tmp_path):
    out = str(tmp_path / "demo")
    code, stdout, err = run_cli(["demo", "--out", out] + SMALL)
    assert code == 0, err
    assert "test accuracy" in stdout.lower()
    annotated = os.path.join(out, "annotated")
    written = [f for _, _, files in os.walk(annotated) for f in files]
    assert len(written) == 3 * 2 + 1  # the test split (a third of 6 per class), and
    assert RECORD in written          # classify's record of them: --overwrite takes it too
    with open(os.path.join(out, "model", "model.json")) as fh:
        assert '"onnx"' in fh.read()
    code, stdout, err = run_cli(["demo", "--out", out] + SMALL)
    assert code != 0 and "--overwrite" in err
    code, stdout, err = run_cli(["demo", "--out", out, "--overwrite"] + SMALL)
    assert code == 0, err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text(u"keep me")
    code, stdout, err = run_cli(["demo", "--out", str(mine), "--overwrite"] + SMALL)
    assert code != 0 and "not an earlier demo's folder" in err
    assert (mine / "notes.txt").read_text() == u"keep me"
    # an earlier demo's folder with a file of the user's added, at its top or inside what the
    # demo wrote: the file is named and nothing is deleted
    demo_files = _files(out)
    for rel in ("report.docx", os.path.join("annotated", "benign", "my_slide.png"),
                os.path.join("model", "notes.txt"), os.path.join("data", "test", "extra.png")):
        path = os.path.join(out, rel)
        with open(path, "w") as fh:
            fh.write(u"mine")
        code, stdout, err = run_cli(["demo", "--out", out, "--overwrite"] + SMALL)
        assert code != 0 and rel in err and "deletes nothing" in err, err
        assert open(path).read() == u"mine"
        os.remove(path)
        assert _files(out) == demo_files  # every file of the earlier demo is still there
    # a folder of the user's made inside it counts too
    os.mkdir(os.path.join(out, "annotated", "keep"))
    code, stdout, err = run_cli(["demo", "--out", out, "--overwrite"] + SMALL)
    assert code != 0 and os.path.join("annotated", "keep") in err
    assert os.path.isdir(os.path.join(out, "annotated", "keep"))


def _files(folder):
    return sorted(os.path.relpath(os.path.join(parent, name), folder)
                  for parent, _, names in os.walk(folder) for name in names)


def test_bad_numbers_are_one_line_before_anything_is_written(tmp_path):
    """--seed -1 was numpy's traceback once the dataset was written, and --epochs 0,
    --resolution 0 or --per-class 0 train's error after it: each left an --out behind that
    only --overwrite would take again."""
    from conftest import run_cli as run_here
    out = str(tmp_path / "demo")
    for flag, value in (("--seed", -1), ("--epochs", 0), ("--resolution", 0),
                        ("--per-class", 0), ("--size", 0)):
        code, o, err = run_here(["demo", "--out", out, flag, value])
        assert code == 2 and "Traceback" not in err, err
        assert err.startswith("oncolens demo: error: " + flag) and len(err.splitlines()) == 1
        assert not os.path.exists(out), flag


def test_a_demo_stopped_midway_removes_what_it_wrote_and_runs_again(tmp_path, monkeypatch):
    """Ctrl-C during the export (data and model written by then) left a partial --out that
    only --overwrite would take: now it goes, with the folders made for it, and the same
    command runs again."""
    import oncolens.export.onnx_export as onnx_export
    from conftest import run_cli as run_here
    out = tmp_path / "new" / "demo"

    def stopped(model_dir, *args, **kwargs):  # data and model written beside --out by then
        building = os.path.dirname(model_dir)
        assert os.path.basename(building).startswith(".demo.") and not out.exists()
        assert os.path.isdir(model_dir) and os.path.isdir(os.path.join(building, "data"))
        raise KeyboardInterrupt()
    monkeypatch.setattr(onnx_export, "export_onnx", stopped)
    code, o, err = run_here(["demo", "--out", out] + SMALL)
    assert code == 130 and "was removed: run the same command again" in err, err
    assert os.listdir(str(tmp_path)) == []
    code, o, err = run_cli(["demo", "--out", out] + SMALL)  # a process of its own
    assert code == 0, err


def _digests(folder):
    """Every file under ``folder`` (relative path -> SHA-256 of its bytes)."""
    import hashlib
    digests = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            digests[os.path.relpath(path, folder)] = digest.hexdigest()
    return digests


def test_an_overwrite_demo_stopped_or_failing_keeps_the_earlier_demo_whole(tmp_path,
                                                                           monkeypatch):
    """--overwrite cleared the earlier demo before the new one ran: stopped (Ctrl-C,
    SIGTERM) or failing midway, it left an empty folder, the earlier result lost. The new
    demo is now built in a hidden folder beside --out, which replaces the earlier one only
    once complete: a stop or a failure leaves the earlier files byte-identical and nothing
    beside them; a finished one replaces them, its model.json naming --out's dataset."""
    import errno
    import json

    import oncolens.export.onnx_export as onnx_export
    from conftest import run_cli as run_here
    out = tmp_path / "demo"
    code, o, err = run_cli(["demo", "--out", out, "--seed", "1"] + SMALL)
    assert code == 0, err
    earlier = _digests(str(out))
    assert len(earlier) > 20
    stops = [(KeyboardInterrupt(), 130, "the earlier demo in it is as it was"),
             (OSError(errno.ENOSPC, "No space left on device", "x.onnx"), 1, "No space left")]
    for stop, status, said in stops:
        def stopped(*args, **kwargs):
            raise stop
        monkeypatch.setattr(onnx_export, "export_onnx", stopped)
        code, o, err = run_here(["demo", "--out", out, "--overwrite"] + SMALL)
        assert code == status, err
        assert _digests(str(out)) == earlier and said in err, err
        assert os.listdir(str(tmp_path)) == ["demo"]  # the folder being built is gone
    code, o, err = run_cli(["demo", "--out", out, "--overwrite", "--seed", "2"] + SMALL)
    assert code == 0, err
    assert "dataset:          {}".format(out / "data") in o
    assert os.listdir(str(tmp_path)) == ["demo"]
    now = _digests(str(out))
    assert set(now) == set(earlier) and now != earlier
    with open(str(out / "data" / "SYNTHETIC.json")) as fh:
        assert json.load(fh)["seed"] == 2
    with open(str(out / "model" / "model.json")) as fh:
        assert json.load(fh)["provenance"]["dataset"] == str(out / "data")


def test_sigterm_while_a_finished_demo_takes_its_place_waits_for_it(tmp_path, monkeypatch):
    """A stop between moving the earlier demo aside and the new one in would leave neither
    at --out: SIGTERM is held over the moves, and then ends the run saying where the demo
    is."""
    import signal

    from oncolens.appliance import outpaths
    from conftest import run_cli as run_here
    real = outpaths.replace_folder

    def replace_folder(tmp, path):
        os.kill(os.getpid(), signal.SIGTERM)
        real(tmp, path)
    monkeypatch.setattr(outpaths, "replace_folder", replace_folder)
    out = tmp_path / "demo"
    code, o, err = run_here(["demo", "--out", out] + SMALL)
    assert code == 143 and "the demo had finished: it is in {}".format(out) in err, err
    assert os.listdir(str(tmp_path)) == ["demo"]
    assert os.path.isfile(str(out / "test_predictions.txt"))


def test_a_demo_whose_classify_step_is_stopped_keeps_only_what_was_there(tmp_path,
                                                                         monkeypatch):
    """SIGINT during classify: its loop stops after the current image and exits 0; the demo
    saw a whole run. Its folder (an empty one of the user's, given with --overwrite) stays,
    emptied of what the demo wrote."""
    import signal
    from oncolens.appliance.loop import LiveLoop
    from conftest import run_cli as run_here
    real = LiveLoop.process

    def process(self, frame):
        os.kill(os.getpid(), signal.SIGINT)  # handled by the loop: a stop after this image
        return real(self, frame)
    monkeypatch.setattr(LiveLoop, "process", process)
    out = tmp_path / "mine"
    out.mkdir()
    code, o, err = run_here(["demo", "--out", out, "--overwrite"] + SMALL)
    assert code == 130 and "was removed" in err, err
    assert "test accuracy" not in o
    assert os.listdir(str(out)) == []


def test_an_earlier_demos_leftover_temporary_files_are_its_own(tmp_path):
    """A demo stopped midway leaves outpaths' '.<name>.<random>.tmp' beside the file it was
    writing: --overwrite takes it as the demo's; one beside a file of the user's is named."""
    from oncolens.train.demo_files import others_in
    out = tmp_path / "demo"
    (out / "data").mkdir(parents=True)
    (out / "model").mkdir()
    (out / "data" / "SYNTHETIC.json").write_text(u"{}")
    for name in ("model.json", ".model.json.0a1b2c3d.tmp", ".resnet18.onnx.99ff00aa.tmp",
                 ".notes.txt.0a1b2c3d.tmp"):
        (out / "model" / name).write_text(u"x")
    assert others_in(str(out)) == [os.path.join("model", ".notes.txt.0a1b2c3d.tmp")]


def test_files_named_like_the_old_fixed_temporary_names_are_the_users(tmp_path):
    """Nothing the demo runs writes '<name>.tmp' or '<name>.part' any more (nor the export's
    '.resnet18.unchecked.onnx'): such a file is the user's and --overwrite names it; the
    export's own staging file ('.resnet18.onnx.<random>.unchecked.onnx') is the demo's."""
    from oncolens.train.demo_files import others_in
    out = tmp_path / "demo"
    (out / "data").mkdir(parents=True)
    (out / "model").mkdir()
    (out / "data" / "SYNTHETIC.json").write_text(u"{}")
    for name in ("resnet18.onnx", ".resnet18.onnx.0a1b2c3d.unchecked.onnx"):
        (out / "model" / name).write_text(u"x")
    assert others_in(str(out)) == []
    for name in ("resnet18.onnx.tmp", "model.json.part", ".resnet18.unchecked.onnx"):
        (out / "model" / name).write_text(u"x")
    assert others_in(str(out)) == sorted(os.path.join("model", name) for name in (
        "resnet18.onnx.tmp", "model.json.part", ".resnet18.unchecked.onnx"))


def test_an_out_that_is_a_mount_point_is_refused_before_the_demo_runs(tmp_path):
    """A mount point cannot be renamed (EBUSY): an --overwrite demo into one (an empty USB
    stick's folder) trained, exported and classified, then failed to take --out's place
    and removed all it had built, saying only 'Device or resource busy'. It is refused in
    one line before anything runs. The mount is made in a namespace of the test's own."""
    import shutil
    import pytest
    if not shutil.which("unshare"):
        pytest.skip("no unshare")
    out = tmp_path / "stick"
    out.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs none " + str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if probe.returncode:
        pytest.skip("cannot mount in a user namespace here")
    command = "mount -t tmpfs none {} && exec {} -m oncolens demo --out {} --overwrite {}" \
        .format(out, sys.executable, out, " ".join(SMALL))
    done = subprocess.run(["unshare", "-rm", "sh", "-c", command], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True)
    assert done.returncode == 2, done.stderr
    assert "[1/4]" not in done.stdout
    assert done.stderr.strip().splitlines() == [
        "oncolens demo: error: --out {}: a mount point, which the finished demo cannot take "
        "the place of (it is built beside it, then renamed): give a folder inside it, e.g. "
        "--out {}".format(out, os.path.join(str(out), "oncolens-demo"))], done.stderr
    assert sorted(os.listdir(str(tmp_path))) == ["stick"]
