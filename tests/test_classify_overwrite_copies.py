"""``oncolens classify IN OUT/ --overwrite``: the copies an earlier run recorded in OUT go
first, so OUT holds this run's alone; nothing the record does not vouch for is removed."""
import json
import os
import shutil

from conftest import copies_in, run_cli

from oncolens.appliance.classify_copies import RECORD


def _classify(model, src, out, *flags):
    code, stdout, err = run_cli(["classify", "--model", model, "--headless", src, out] +
                                list(flags))
    assert code == 0, err
    return stdout


def _entry(out, rel, path=None):
    st = os.stat(path or os.path.join(out, rel))
    return json.dumps({"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns})


def test_overwrite_removes_the_earlier_runs_copies_only(tiny_bundle, tiny_data, tmp_path):
    """A rerun on fewer images kept the copies of the images no longer in the input: OUT
    mixed 9 + 5 copies of two runs."""
    out = str(tmp_path / "out") + os.sep
    _classify(tiny_bundle, os.path.join(tiny_data, "test"), out)  # 9 images, 3 sub-folders
    assert sorted(os.listdir(out)) == [RECORD, "benign", "malignant", "normal"]
    shutil.copy(os.path.join(tiny_data, "val", "benign", "benign_val_0000.png"),
                os.path.join(out, "benign", "mine.png"))  # the user's, put there since
    rewritten = os.path.join(out, "normal", "normal_test_0000.png")
    shutil.copy(os.path.join(tiny_data, "val", "normal", "normal_val_0000.png"), rewritten)
    os.utime(rewritten, ns=(0, 10 ** 18))  # written over since the run: no longer its copy
    src = str(tmp_path / "five")
    shutil.copytree(os.path.join(tiny_data, "train", "benign"), src)
    os.remove(os.path.join(src, sorted(os.listdir(src))[0]))
    _classify(tiny_bundle, src, out, "--overwrite")
    assert copies_in(out) == sorted(os.listdir(src) + ["benign", "normal"])  # malignant/: gone
    assert os.listdir(os.path.join(out, "benign")) == ["mine.png"]
    assert os.listdir(os.path.join(out, "normal")) == ["normal_test_0000.png"]
    with open(os.path.join(out, RECORD)) as fh:  # the record now holds this run's alone
        assert sorted(json.loads(line)["path"] for line in fh) == sorted(os.listdir(src))
    _classify(tiny_bundle, os.path.join(tiny_data, "val", "malignant"), out)  # no --overwrite:
    assert len(copies_in(out)) == 5 + 2 + 3                                  # added to it
    _classify(tiny_bundle, os.path.join(tiny_data, "val", "normal"), out, "--overwrite")
    assert copies_in(out) == sorted(os.listdir(os.path.join(tiny_data, "val", "normal")) +
                                    ["benign", "normal"])


def test_a_record_naming_what_is_not_a_copy_removes_it_not(tiny_bundle, tiny_data, tmp_path):
    """A line naming a file outside OUT, a link in OUT, or a file that is no image removes
    nothing; the copy a line rightly names goes."""
    src = os.path.join(tiny_data, "test", "benign")
    out = str(tmp_path / "out")
    os.makedirs(out)
    victim = str(tmp_path / "victim.png")
    shutil.copy(os.path.join(src, sorted(os.listdir(src))[0]), victim)
    os.symlink(victim, os.path.join(out, "link.png"))
    with open(os.path.join(out, "notes.txt"), "w") as fh:
        fh.write("mine\n")
    shutil.copy(victim, os.path.join(out, "copy.png"))
    lines = [_entry(out, "../victim.png", victim), _entry(out, victim, victim),
             _entry(out, "link.png"), _entry(out, "notes.txt"), _entry(out, "copy.png"),
             '{"path": "cut']  # a killed run's unfinished last line
    with open(os.path.join(out, RECORD), "w") as fh:
        fh.write("\n".join(lines))
    _classify(tiny_bundle, src, out, "--overwrite")
    assert os.path.isfile(victim) and os.path.islink(os.path.join(out, "link.png"))
    assert copies_in(out) == sorted(os.listdir(src) + ["link.png", "notes.txt"])


def test_overwrite_without_a_record_warns_that_copies_may_remain(tiny_bundle, tiny_data,
                                                                 tmp_path, caplog):
    out = str(tmp_path / "out")
    _classify(tiny_bundle, os.path.join(tiny_data, "test", "normal"), out)
    os.remove(os.path.join(out, RECORD))  # as an earlier version left the folder
    _classify(tiny_bundle, os.path.join(tiny_data, "test", "benign"), out, "--overwrite")
    warned = [r.getMessage() for r in caplog.records if "may remain" in r.getMessage()]
    assert len(warned) == 1 and out in warned[0] and RECORD in warned[0]
    assert len(copies_in(out)) == 6  # nothing removed without a record


def test_a_pattern_rerun_on_fewer_images_names_the_files_left(tiny_bundle, tiny_data,
                                                              tmp_path, caplog):
    """A numbered output keeps no record (its folder may be the input's): the files of an
    earlier run beyond this run's numbers stay, and a warning says so."""
    pattern = str(tmp_path / "out_%i.jpg")
    _classify(tiny_bundle, os.path.join(tiny_data, "test"), pattern)
    _classify(tiny_bundle, os.path.join(tiny_data, "test", "benign"), pattern, "--overwrite")
    assert len(os.listdir(str(tmp_path))) == 9
    warned = [r.getMessage() for r in caplog.records if "did not write remain" in
              r.getMessage()]
    assert len(warned) == 1 and "6 files" in warned[0], warned
    assert str(tmp_path / "out_3.jpg") in warned[0]
