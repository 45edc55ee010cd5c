"""`oncolens data check` and `oncolens data split` on planted problems."""
import csv
import os
import shutil

import cv2
import numpy as np
import pytest

from conftest import run_cli


def _scan_like(rng, size=96):
    """A random textured image: distinct per call (hash distance ~32 between two)."""
    base = rng.integers(0, 255, size=(6, 6)).astype(np.uint8)
    img = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(0, 20, size=(size, size)).astype(np.uint8)
    return cv2.add(img, noise)


def _near_copy(img):
    """The same scan saved again: re-scaled, slightly brighter, re-encoded."""
    h, w = img.shape[:2]
    out = cv2.resize(cv2.resize(img, (w + 17, h + 17)), (w, h))
    return cv2.add(out, np.full_like(out, 3))


def _write(path, img):
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder)
    assert cv2.imwrite(path, img)


def _planted_split_dataset(root):
    rng = np.random.default_rng(5)
    for split, n in (("train", 5), ("val", 2), ("test", 2)):
        for cls in ("benign", "malignant"):
            for i in range(n):
                _write(os.path.join(root, split, cls, "{}_{}.png".format(cls, i)), _scan_like(rng))
    leaked = cv2.imread(os.path.join(root, "train", "benign", "benign_0.png"),
                        cv2.IMREAD_GRAYSCALE)
    _write(os.path.join(root, "test", "benign", "copy_of_train.png"), _near_copy(leaked))
    shutil.copy(os.path.join(root, "train", "benign", "benign_1.png"),
                os.path.join(root, "train", "benign", "benign_1_again.png"))
    shutil.copy(os.path.join(root, "train", "benign", "benign_2.png"),
                os.path.join(root, "train", "malignant", "relabelled.png"))
    with open(os.path.join(root, "val", "malignant", "corrupt.png"), "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n not really")
    open(os.path.join(root, "val", "benign", "empty.jpg"), "wb").close()
    rgba = cv2.cvtColor(_scan_like(rng), cv2.COLOR_GRAY2BGRA)
    _write(os.path.join(root, "train", "malignant", "rgba.png"), rgba)


def test_check_finds_planted_problems(tmp_path):
    root = str(tmp_path / "ds")
    _planted_split_dataset(root)
    code, out, err = run_cli(["data", "check", root, "--json", str(tmp_path / "a.json")])
    assert code == 1, out + err
    errors = [l for l in out.splitlines() if l.startswith("error:")]
    assert any("leakage" in l and "copy_of_train.png" in l and "benign_0.png" in l
               for l in errors), out
    assert any("labels benign/malignant" in l and "relabelled.png" in l for l in errors), out
    assert any("corrupt.png" in l and "decoded" in l for l in errors), out
    assert any("empty.jpg" in l and "empty" in l for l in errors), out
    assert len(errors) == 4, out
    assert any("duplicates in train/benign (identical files)" in l and "benign_1_again" in l
               for l in out.splitlines()), out
    assert "RGBA" in out and "L " in out
    assert "train  benign 6  malignant 7" in out


def test_check_clean_dataset_passes(tiny_data):
    code, out, err = run_cli(["data", "check", tiny_data])
    assert code == 0, out + err
    assert "0 errors" in out


def test_split_keeps_near_duplicates_together_and_stratifies(tmp_path):
    rng = np.random.default_rng(9)
    src = str(tmp_path / "flat")
    counts = {"benign": 40, "malignant": 20, "normal": 10}
    for cls, n in counts.items():
        for i in range(n):
            _write(os.path.join(src, cls, "{}.png".format(i)), _scan_like(rng))
    for i in range(6):  # six scans saved twice, under the same label
        img = cv2.imread(os.path.join(src, "benign", "{}.png".format(i)), cv2.IMREAD_GRAYSCALE)
        _write(os.path.join(src, "benign", "{}_again.png".format(i)), _near_copy(img))
    _write(os.path.join(src, "normal", "conflict.png"),
           cv2.imread(os.path.join(src, "malignant", "0.png"), cv2.IMREAD_GRAYSCALE))
    out_dir = str(tmp_path / "split")
    code, out, err = run_cli(["data", "split", src, out_dir, "--seed", 1])
    assert code == 0, out + err
    with open(os.path.join(out_dir, "splits.csv")) as fh:
        rows = list(csv.DictReader(fh))
    fate = {r["path"]: r["split"] for r in rows}
    for i in range(6):
        assert fate["benign/{}.png".format(i)] == fate["benign/{}_again.png".format(i)]
    assert fate["normal/conflict.png"].startswith("dropped")
    assert fate["malignant/0.png"].startswith("dropped")
    for cls, n in (("benign", 46), ("malignant", 19), ("normal", 10)):
        got = [len(os.listdir(os.path.join(out_dir, s, cls))) for s in ("train", "val", "test")]
        assert sum(got) == n
        assert abs(got[0] - 0.7 * n) <= 2 and abs(got[1] - 0.15 * n) <= 2, (cls, got)
    assert open(os.path.join(out_dir, "labels.txt")).read().split() == \
        ["benign", "malignant", "normal"]
    code, out, err = run_cli(["data", "check", out_dir])
    assert code == 0, out + err


def test_split_refuses_existing_output(tmp_path, tiny_data):
    out_dir = tmp_path / "exists"
    out_dir.mkdir()
    (out_dir / "x").write_text(u"x")
    code, out, err = run_cli(["data", "split", os.path.join(tiny_data, "train"), str(out_dir)])
    assert code != 0 and "--overwrite" in err


def test_check_fails_a_split_dataset_without_train_or_val_images(tmp_path, tiny_data, caplog):
    """train refuses a dataset without images in train/ or val/; data check passed it with
    0 errors (a split made with --ratios 1 0 0 has no val/ at all)."""
    import shutil
    no_train = str(tmp_path / "no_train")
    for split in ("val", "test"):
        shutil.copytree(os.path.join(tiny_data, split), os.path.join(no_train, split))
    code, out, err = run_cli(["data", "check", no_train])
    assert code == 1, out
    assert "error: {}/: no readable images".format(os.path.join(no_train, "train")) in out
    raw, out_dir = str(tmp_path / "raw"), str(tmp_path / "all_train")
    for cls in ("benign", "malignant"):
        shutil.copytree(os.path.join(tiny_data, "train", cls), os.path.join(raw, cls))
    code, out, err = run_cli(["data", "split", raw, out_dir, "--ratios", "1", "0", "0"])
    assert code == 0, err
    assert any("no image went to val/" in r.getMessage() for r in caplog.records)
    code, out, err = run_cli(["data", "check", out_dir])
    assert code == 1, out
    assert "error: {}/: no readable images".format(os.path.join(out_dir, "val")) in out
    assert "train needs images in train/ and val/" in out


def test_a_file_that_is_not_an_image_is_a_warning_not_an_error(tmp_path, tiny_data):
    """A case.json beside the images (train and evaluate leave it out) failed data check
    with 'not an image file' and was counted as an image of its class; data split recorded
    it as 'dropped: unreadable'."""
    data = str(tmp_path / "data")
    shutil.copytree(tiny_data, data)
    with open(os.path.join(data, "train", "benign", "case.json"), "w") as fh:
        fh.write("{}")
    code, out, err = run_cli(["data", "check", data, "--max-distance", "0"])
    assert code == 0, out
    assert "train  benign 6  malignant 6  normal 6" in out
    assert "warning: 1 file in the class folders without an image extension" in out
    assert "train/benign/case.json" in out
    raw, split = str(tmp_path / "raw"), str(tmp_path / "split")
    shutil.copytree(os.path.join(data, "train"), raw)
    code, out, err = run_cli(["data", "split", raw, split])
    assert code == 0, err
    with open(os.path.join(split, "splits.csv")) as fh:
        rows = {r["path"]: r["split"] for r in csv.DictReader(fh)}
    assert rows["benign/case.json"] == "dropped: not an image file"


@pytest.mark.parametrize("argv", [["data", "check", "{f}"], ["data", "split", "{f}", "{out}"],
                                  ["train", "{f}", "--model-dir", "{out}"],
                                  ["evaluate", "--model-dir", "{f}", "{f}"]])
def test_a_file_where_a_folder_is_expected_is_named_as_a_file(tmp_path, argv):
    """A file given for a folder is 'not a folder (a file)', not 'folder not found'."""
    f = tmp_path / "labels.txt"
    f.write_text("benign\nmalignant\n")
    code, out, err = run_cli([a.format(f=f, out=tmp_path / "out") for a in argv])
    assert code == 2 and "{}: not a folder (a file)".format(f) in err
    assert "folder not found" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["check", "split"])
@pytest.mark.parametrize("value", ["-1", "65", "-64"])
def test_max_distance_outside_the_hash_is_refused_before_reading(tmp_path, tiny_data, command,
                                                                 value):
    """--max-distance is a Hamming distance between 64-bit hashes: a negative one silently
    turned the near-duplicate search off, one past 64 grouped every image; both ran."""
    out = str(tmp_path / "out")
    args = [os.path.join(tiny_data, "train")] + ([out] if command == "split" else [])
    code, o, err = run_cli(["data", command] + args + ["--max-distance", value])
    assert code == 2, err
    assert err.strip().splitlines() == [
        "oncolens data {}: error: --max-distance: expected a Hamming distance of 0 to 64 "
        "bits, got {}".format(command, value)], err
    assert o == "" and "reading images" not in err
    assert not os.path.exists(out)


def test_a_turned_copy_by_its_exif_tag_is_the_same_image(tmp_path):
    """Every reader (train, evaluate, the appliance) turns a JPEG by its EXIF orientation
    tag, but data check decoded it with IMREAD_UNCHANGED, which does not: a phone's copy of
    a scan stored sideways with the tag, under another label, was not found (no error), and
    its size was reported the wrong way round."""
    Image = pytest.importorskip("PIL.Image")
    from oncolens.appliance.imageio import decode_image, read_bytes
    rng = np.random.default_rng(3)
    src = str(tmp_path / "raw")
    up = cv2.resize(np.stack([_scan_like(rng, 60)] * 3, axis=2), (120, 80))
    for cls in ("benign", "malignant"):
        os.makedirs(os.path.join(src, cls))
        for i in range(2):
            _write(os.path.join(src, cls, "{}.png".format(i)), _scan_like(rng, 80))
    Image.fromarray(up).save(os.path.join(src, "benign", "upright.jpg"), quality=95)
    turned = Image.fromarray(np.ascontiguousarray(np.rot90(up)))  # shown turned back (tag 6)
    exif = turned.getexif()
    exif[0x0112] = 6
    sideways = os.path.join(src, "malignant", "sideways.jpg")
    turned.save(sideways, quality=95, exif=exif.tobytes())
    assert decode_image(read_bytes(sideways)).shape[:2] == (80, 120)  # what training sees
    code, o, err = run_cli(["data", "check", src, "--json", str(tmp_path / "a.json")])
    assert code == 1, o + err
    assert "same image under labels benign/malignant" in o and "sideways.jpg" in o
    import json
    with open(str(tmp_path / "a.json")) as fh:
        rec = [r for r in json.load(fh)["records"] if r["path"].endswith("sideways.jpg")][0]
    assert (rec["width"], rec["height"]) == (120, 80)


def test_a_float_tiff_is_an_error_as_every_reader_refuses_it(tmp_path, capfd):
    """A 32-bit float TIFF (a microscope's export) passed data check as an 'L' image, while
    train, evaluate and the appliance refuse it; data split placed it in a split."""
    from oncolens.appliance.errors import ImageReadError
    from oncolens.appliance.imageio import decode_image, read_bytes
    rng = np.random.default_rng(4)
    src = str(tmp_path / "raw")
    for cls in ("benign", "malignant"):
        for i in range(2):
            _write(os.path.join(src, cls, "{}.png".format(i)), _scan_like(rng, 64))
    tiff = os.path.join(src, "benign", "export.tiff")
    _write(tiff, rng.random((64, 64)).astype(np.float32))
    with pytest.raises(ImageReadError):
        decode_image(read_bytes(tiff))  # what train sees
    capfd.readouterr()
    code, o, err = run_cli(["data", "check", src])
    assert code == 1, o + err
    assert "error: benign/export.tiff: 32-bit float samples are not supported" in o
    assert "ERROR" not in capfd.readouterr().err  # no OpenCV log line either
    code, o, err = run_cli(["data", "split", src, str(tmp_path / "out")])
    assert code == 0, err
    with open(str(tmp_path / "out" / "splits.csv")) as fh:
        fates = {r["path"]: r["split"] for r in csv.DictReader(fh)}
    assert fates["benign/export.tiff"] == "dropped: unreadable"
