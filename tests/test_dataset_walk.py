"""How every command walks a folder of images: hidden files (macOS ``._x.png`` resource
forks, ``.DS_Store``) and OS junk (``Thumbs.db``, ``desktop.ini``) are left out alike by
data check, data split, train, evaluate, classify and batch."""
import os
import shutil

from conftest import FAST_TRAIN, run_cli

FAST = FAST_TRAIN + ["--epochs", 1]
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "


def _plant_junk(folder):
    with open(os.path.join(folder, "._x.png"), "wb") as fh:
        fh.write(APPLEDOUBLE)
    with open(os.path.join(folder, ".DS_Store"), "wb") as fh:
        fh.write(b"\x00\x00\x00\x01Bud1")
    for name in ("Thumbs.db", "desktop.ini"):
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(b"\xd0\xcf\x11\xe0 junk")
    hidden = os.path.join(folder, ".ipynb_checkpoints")
    os.makedirs(hidden)
    with open(os.path.join(hidden, "x-checkpoint.png"), "wb") as fh:
        fh.write(APPLEDOUBLE)


def _junk_dataset(tiny_data, tmp_path):
    data = str(tmp_path / "d")
    shutil.copytree(tiny_data, data)
    for split in ("train", "val", "test"):
        _plant_junk(os.path.join(data, split, "benign"))
    return data


def _names(paths):
    return set(os.path.basename(p) for p in paths)


def test_every_walker_leaves_out_hidden_files_and_os_junk(tiny_data, tmp_path):
    from oncolens.appliance.pipeline import iter_image_files
    from oncolens.appliance.sources import list_images
    from oncolens.train.data import list_samples
    from oncolens.train.scan import walk
    data = _junk_dataset(tiny_data, tmp_path)
    junk = {"._x.png", ".DS_Store", "Thumbs.db", "desktop.ini", "x-checkpoint.png"}
    test = os.path.join(data, "test")
    walked = {
        "scan": _names(os.path.join(data, rel) for rel, _, _ in walk(data)),
        "list_samples": _names(p for p, _ in list_samples(test, ["benign", "malignant"])),
        "list_images": _names(p for p, _ in list_images(test, unsupported=True)),
        "iter_image_files": _names(p for p, _ in iter_image_files(test)),
    }
    for name, found in walked.items():
        assert found and not found & junk, (name, found & junk)


def test_data_check_and_train_ignore_hidden_files_and_os_junk(tiny_data, tmp_path):
    data = _junk_dataset(tiny_data, tmp_path)
    code, out, err = run_cli(["data", "check", data, "--max-distance", "0"])
    assert code == 0, out
    assert "Thumbs.db" not in out and "._x.png" not in out
    model_dir = str(tmp_path / "m")
    code, out, err = run_cli(["train", data, "--model-dir", model_dir] + FAST)
    assert code == 0, err
    code, out, err = run_cli(["evaluate", "--model-dir", model_dir, os.path.join(data, "test"),
                              "--bootstrap", 0, "--backend", "torch"])
    assert code == 0, out + err
    assert "unreadable" not in out


def _linked_dataset(tiny_data, tmp_path):
    """test/ with its malignant images in a folder elsewhere, linked in as a sub-folder
    (a second site's scans), plus a link cycle and a second link to the same folder."""
    data = str(tmp_path / "d")
    shutil.copytree(tiny_data, data)
    ext = str(tmp_path / "ext")
    shutil.copytree(os.path.join(tiny_data, "val", "malignant"), ext)
    for split in ("train", "test"):
        os.symlink(ext, os.path.join(data, split, "malignant", "site2"))
    os.symlink(ext, os.path.join(data, "test", "malignant", "site2_again"))
    os.symlink(os.path.join(data, "test"), os.path.join(data, "test", "malignant", "loop"))
    os.symlink(os.path.join(data, "test", "malignant"), os.path.join(ext, "back"))
    return data


def test_every_walker_follows_linked_folders_once(tiny_data, tmp_path, caplog):
    from oncolens.appliance.pipeline import iter_image_files
    from oncolens.appliance.sources import list_images
    from oncolens.train.data import list_samples
    from oncolens.train.scan import walk
    data = _linked_dataset(tiny_data, tmp_path)
    test = os.path.join(data, "test")
    linked = set(os.listdir(os.path.join(tiny_data, "val", "malignant")))
    walked = {
        "scan": [os.path.join(data, rel) for rel, split, _ in walk(data) if split == "test"],
        "list_samples": [p for p, _ in list_samples(test, ["benign", "malignant", "normal"])],
        "list_images": [p for p, _ in list_images(test)],
        "iter_image_files": [p for p, _ in iter_image_files(test)],
    }
    for name, paths in walked.items():
        assert len(paths) == 9 + len(linked), (name, paths)  # every image once, none twice
        assert _names(p for p in paths if os.sep + "site2" + os.sep in p) == linked, name
    assert "read already" in caplog.text and "a link cycle" in caplog.text


def test_data_check_counts_images_in_linked_folders(tiny_data, tmp_path):
    data = _linked_dataset(tiny_data, tmp_path)
    code, out, err = run_cli(["data", "check", data, "--max-distance", "0"])
    # the linked images are in train/ and test/ (and val/): leakage, the images were read
    assert "leakage" in out and "site2" in out, out
    assert "test   benign 3  malignant 6  normal 3  (total 12)" in out, out


def test_a_link_to_a_folder_of_the_same_dataset_is_not_read_under_a_second_name(
        tiny_data, tmp_path, caplog):
    """A link to a sibling class folder (or a top-level alias of one) would read its images
    under another label, or take them from their own: the real folder is read under its own
    name, wherever the link sorts, and the link is skipped with a warning."""
    from oncolens.appliance.pipeline import iter_image_files
    from oncolens.appliance.sources import list_images
    from oncolens.train.data import list_samples
    from oncolens.train.scan import walk
    data = str(tmp_path / "d")
    shutil.copytree(tiny_data, data)
    test = os.path.join(data, "test")
    os.symlink("malignant", os.path.join(test, "cancer"))            # sorts first
    os.symlink(os.path.join("..", "benign"), os.path.join(test, "malignant", "more"))
    for name, pairs in (("list_images", list_images(test)),
                        ("iter_image_files", list(iter_image_files(test)))):
        tops = sorted(set(rel.split(os.sep)[0] for _, rel in pairs))
        assert tops == ["benign", "malignant", "normal"], (name, tops)
        assert len(pairs) == 9, (name, pairs)
    samples = list_samples(test, ["benign", "malignant", "normal"])
    assert [sum(1 for _, t in samples if t == k) for k in range(3)] == [3, 3, 3]
    found = [(split, cls) for _, split, cls in walk(data) if split == "test"]
    assert sorted(set(found)) == [("test", "benign"), ("test", "malignant"), ("test", "normal")]
    assert len(found) == 9
    assert "which is read under its own name" in caplog.text


def test_a_glob_through_a_link_cycle_lists_each_file_once(tiny_data, tmp_path):
    from oncolens.appliance.pipeline import iter_image_files
    from oncolens.appliance.sources import list_images
    folder = str(tmp_path / "t")
    shutil.copytree(os.path.join(tiny_data, "test"), folder)
    os.symlink("..", os.path.join(folder, "benign", "up"))
    open(os.path.join(folder, "benign", "z.gif"), "wb").close()
    pattern = os.path.join(folder, "**", "*")
    assert len(list_images(pattern)) == 9
    # batch's listing of a glob records a .gif as a failure, as for a folder
    assert sorted(os.path.basename(p) for p, _ in iter_image_files(pattern))[-1] == "z.gif"
    assert len(list(iter_image_files(pattern))) == 10
