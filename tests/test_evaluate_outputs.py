"""`oncolens evaluate`: every output checked before any model runs (one line, nothing
replaced without --overwrite), --bins in range, and a non-zero exit when images could not be
read."""
import os
import shutil

import pytest

from conftest import run_cli


def _one_line(code, out, err, word):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert word in err, err
    assert "accuracy" not in out  # refused before the evaluation


@pytest.mark.parametrize("case", ["json-under-a-file", "json-a-folder", "out-a-file",
                                  "bins-0", "bins-negative", "json-an-image-name"])
def test_bad_outputs_and_bins_are_refused_first(tiny_bundle, tiny_data, tmp_path, case):
    afile = tmp_path / "afile"
    afile.write_text(u"x")
    extra, word = {"json-under-a-file": (["--json", str(afile / "x.json")], "--json"),
                   "json-a-folder": (["--json", str(tmp_path)], "is a folder"),
                   "out-a-file": (["--out", str(afile)], "--out"),
                   "bins-0": (["--bins", "0"], "--bins"),
                   "bins-negative": (["--bins", "-3"], "--bins"),
                   # with --overwrite it could be an image of the split
                   "json-an-image-name": (["--json", str(tmp_path / "a.png"), "--overwrite"],
                                          "--json")}[case]
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle,
                              os.path.join(tiny_data, "test"), "--out", str(tmp_path / "e")] +
                             extra)
    _one_line(code, out, err, word)


def test_existing_reports_are_refused_before_the_run(tiny_bundle, tiny_data, tmp_path):
    split = os.path.join(tiny_data, "test")
    cmp_dir = tmp_path / "cmp"
    cmp_dir.mkdir()
    (cmp_dir / "comparison.md").write_text(u"keep")
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, "--model-dir", tiny_bundle,
                              split, "--out", str(cmp_dir)])
    _one_line(code, out, err, "comparison.md already exists")
    assert (cmp_dir / "comparison.md").read_text() == u"keep"
    one = tmp_path / "one"
    one.mkdir()
    (one / "report.md").write_text(u"keep")
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, split, "--out", str(one)])
    _one_line(code, out, err, "report.md already exists")
    assert (one / "report.md").read_text() == u"keep"


def test_unreadable_images_make_the_exit_code_1(tiny_bundle, tiny_data, tmp_path):
    split = str(tmp_path / "test")
    shutil.copytree(os.path.join(tiny_data, "test"), split)
    open(os.path.join(split, "benign", "zero.png"), "wb").close()
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, split, "--bootstrap", "0",
                              "--out", str(tmp_path / "e")])
    assert code == 1, err
    assert "unreadable: " in out and "zero.png" in out
    assert "1 image could not be read" in err and "Traceback" not in err
    assert os.path.isfile(str(tmp_path / "e" / "report.md"))  # the rest is still reported


def test_report_md_names_the_unreadable_images_up_to_20(tiny_bundle, tiny_data, tmp_path):
    """report.md gave only how many images were skipped (the printout and JSON name them)."""
    split = str(tmp_path / "test")
    shutil.copytree(os.path.join(tiny_data, "test"), split)
    for n in range(22):
        open(os.path.join(split, "benign", "zero{:02d}.png".format(n)), "wb").close()
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, split, "--bootstrap", "0",
                              "--out", str(tmp_path / "e")])
    assert code == 1, err
    with open(str(tmp_path / "e" / "report.md")) as fh:
        report = fh.read()
    named = [line for line in report.splitlines() if line.startswith("- unreadable: `")]
    assert len(named) == 20, report
    assert "zero00.png`: " in named[0] and "zero19.png" in named[19]
    assert "zero20.png" not in report and "- and 2 more" in report


def test_out_inside_the_split_is_refused(tiny_bundle, tiny_data, tmp_path):
    import shutil
    split = str(tmp_path / "test")
    shutil.copytree(os.path.join(tiny_data, "test"), split)
    before = sorted(os.listdir(os.path.join(split, "benign")))
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, split, "--out",
                              os.path.join(split, "benign")])
    assert code == 2 and "inside the split" in err
    assert sorted(os.listdir(os.path.join(split, "benign"))) == before


def test_the_default_out_of_a_split_given_as_dot_is_named_after_its_folder(
        tiny_bundle, tiny_data, tmp_path, monkeypatch):
    """'oncolens evaluate --model-dir M .' inside test/ wrote M/eval-./ (and '..' M/eval-../)."""
    model_dir = str(tmp_path / "m")
    shutil.copytree(tiny_bundle, model_dir)
    monkeypatch.chdir(os.path.join(tiny_data, "test"))
    code, out, err = run_cli(["evaluate", "--model-dir", model_dir, ".", "--bootstrap", "0"])
    assert code == 0, err
    assert os.path.isfile(os.path.join(model_dir, "eval-test", "report.md"))
    assert not [n for n in os.listdir(model_dir) if n.startswith("eval-.")]


def test_overwrite_replaces_the_earlier_evaluation_whole(tiny_bundle, tiny_data, tmp_path):
    """Two models into --out, then one model with --overwrite: the second model's report and
    figures (and comparison.md) of the earlier run stayed beside the new report. Now
    --overwrite removes every file evaluate wrote there, and only those; without it, an
    earlier evaluation's files are refused even where the new run's names differ."""
    split = os.path.join(tiny_data, "test")
    other = str(tmp_path / "b")
    shutil.copytree(tiny_bundle, other)
    out = tmp_path / "cmp"
    code, o, err = run_cli(["evaluate", "--model-dir", tiny_bundle, "--model-dir", other, split,
                            "--out", str(out), "--bootstrap", "0"])
    assert code == 0, err
    earlier = set(os.listdir(str(out)))
    assert {"comparison.md", "1-model-report.md", "2-b-report.md",
            "2-b-confusion.png"} <= earlier, earlier
    (out / "notes.txt").write_text(u"mine")
    (out / "my-report.md").write_text(u"mine")
    (out / "mine").mkdir()
    code, o, err = run_cli(["evaluate", "--model-dir", tiny_bundle, split, "--out", str(out),
                            "--bootstrap", "0"])
    assert code == 2, err
    assert "1-model-confusion.png already exists" in err and "--overwrite" in err, err
    assert set(os.listdir(str(out))) == earlier | {"notes.txt", "my-report.md", "mine"}
    code, o, err = run_cli(["evaluate", "--model-dir", tiny_bundle, split, "--out", str(out),
                            "--bootstrap", "0", "--overwrite"])
    assert code == 0, err
    names = set(os.listdir(str(out)))
    assert {"report.md", "confusion.png", "notes.txt", "my-report.md", "mine"} <= names
    assert not names & earlier - {"report.md", "confusion.png", "roc.png",
                                  "reliability.png"}, names
    assert (out / "notes.txt").read_text() == u"mine"


def test_counts_of_one_are_singular(tiny_bundle, tiny_data, tmp_path):
    """'(1 images)' in evaluate's printout and report, '1 files' in data check: every count
    goes through errors.plural."""
    from oncolens.appliance.errors import plural
    assert [plural(1, "image"), plural(0, "image"), plural(2, "class"),
            plural(3, "entry", "entries"), plural(2, "epoch")] == [
                "1 image", "0 images", "2 classes", "3 entries", "2 epochs"]
    split = tmp_path / "one"
    os.makedirs(str(split / "benign"))
    first = sorted(os.listdir(os.path.join(tiny_data, "test", "benign")))[0]
    shutil.copy(os.path.join(tiny_data, "test", "benign", first), str(split / "benign"))
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, str(split),
                              "--bootstrap", "0", "--out", str(tmp_path / "e")])
    assert code == 0, err
    assert "(1 image)" in out and "1 images" not in out, out
    report = (tmp_path / "e" / "report.md").read_text()
    assert "`{}` (1 image)".format(split) in report and "1 images" not in report
    code, out, err = run_cli(["data", "check", str(split)])
    assert "{}: 1 file, classes benign".format(split) in out, out


def _files(folder):
    """The bytes of each file directly in ``folder`` (the shared bundle may hold a variants/
    folder by the time this runs, made by an earlier test's batch)."""
    paths = [os.path.join(folder, n) for n in os.listdir(folder)]
    return dict((p, open(p, "rb").read()) for p in paths if os.path.isfile(p))


@pytest.mark.parametrize("name", ["model.json", "labels.txt", "model_best.pth.tar",
                                  "resnet18.onnx", "report"])
def test_json_never_replaces_the_models_files_nor_the_report(tiny_bundle, tiny_data, tmp_path,
                                                             name):
    """--json --overwrite once wrote the metrics over whatever it named: the model's own
    model.json (the bundle no longer loaded), its checkpoint or ONNX, or the report.md this
    run had just written (and then printed 'report: ...' for a file holding JSON)."""
    model = str(tmp_path / "model")
    shutil.copytree(tiny_bundle, model)
    out = tmp_path / "e"
    target = str(out / "report.md") if name == "report" else os.path.join(model, name)
    before = _files(model)
    code, stdout, err = run_cli(["evaluate", "--model-dir", model, os.path.join(tiny_data, "test"),
                                 "--out", str(out), "--json", target, "--overwrite"])
    _one_line(code, stdout, err, "--json")
    assert _files(model) == before
    assert not out.exists()


@pytest.mark.parametrize("stop", ["figure", "report"])
def test_ctrl_c_while_writing_leaves_no_half_file_under_its_name(tiny_bundle, tiny_data,
                                                                 tmp_path, monkeypatch, stop):
    """The report and the figures were written in place: Ctrl-C midway left a half PNG, or a
    report.md opened but not yet written (empty), under its final name."""
    import matplotlib.figure
    from oncolens.train import report

    def interrupted(*args, **kwargs):
        if stop == "figure":  # some bytes of the PNG, then Ctrl-C
            with open(args[1], "wb") as fh:
                fh.write(b"\x89PNG\r\n")
        raise KeyboardInterrupt
    monkeypatch.setattr(*{"figure": (matplotlib.figure.Figure, "savefig", interrupted),
                          "report": (report, "model_markdown", interrupted)}[stop])
    out = tmp_path / "e"
    code, stdout, err = run_cli(["evaluate", "--model-dir", tiny_bundle,
                                 os.path.join(tiny_data, "test"), "--out", str(out),
                                 "--bootstrap", "0"])
    assert code != 0 and "interrupted" in err and "Traceback" not in err, err
    names = os.listdir(str(out)) if out.exists() else []
    assert not [n for n in names if n.endswith(".tmp")], names
    for name in names:  # what is there is whole
        if name.endswith(".png"):
            assert os.path.getsize(str(out / name)) > 100, name
        else:
            assert (out / name).read_text().startswith(u"#"), name


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_labels_that_name_one_class_twice_are_one_line(tiny_bundle, tiny_data, tmp_path,
                                                       backend):
    """A model.json whose labels named a class twice was scored anyway: on a split of two
    class folders it reported 9 images where there were 6, a recall of 1.000 for a class
    'never predicted', and both rows of the duplicated class alike."""
    import json
    model = str(tmp_path / "model")
    shutil.copytree(tiny_bundle, model)
    path = os.path.join(model, "model.json")
    with open(path) as fh:
        info = json.load(fh)
    info["labels"] = [info["labels"][0]] * 2 + info["labels"][2:]
    with open(path, "w") as fh:
        json.dump(info, fh)
    split = str(tmp_path / "split")
    shutil.copytree(os.path.join(tiny_data, "test"), split)
    shutil.rmtree(os.path.join(split, sorted(os.listdir(split))[1]))  # the class no longer named
    code, out, err = run_cli(["evaluate", "--model-dir", model, split, "--backend", backend,
                              "--bootstrap", 0, "--out", str(tmp_path / "e")])
    assert code == 1 and "more than once" in err and "model.json" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "accuracy" not in out and not (tmp_path / "e").exists()


@pytest.mark.parametrize("name", ["report.md", "roc.png"])
def test_a_folder_at_a_report_name_is_one_line_before_the_run(tiny_bundle, tiny_data, tmp_path,
                                                              name):
    """A folder named report.md or roc.png in --out passed the checks (the earlier run's
    files are files), so the run evaluated and then ended on 'Is a directory'."""
    out = tmp_path / "e"
    (out / name / "mine").mkdir(parents=True)
    code, stdout, err = run_cli(["evaluate", "--model-dir", tiny_bundle,
                                 os.path.join(tiny_data, "test"), "--out", str(out),
                                 "--overwrite"])
    _one_line(code, stdout, err, "{} is a folder".format(out / name))
    assert os.listdir(str(out)) == [name] and os.listdir(str(out / name)) == ["mine"]


def test_a_file_of_yours_named_like_a_numbered_report_is_kept(tiny_bundle, tiny_data, tmp_path):
    """--out holding 2024-03-report.md (yours): evaluate took it, by its name alone, for an
    earlier evaluation's '<n>-<model>-report.md', refused the run, and --overwrite removed
    it. The numbered files are evaluate's only where its record in the folder lists them
    (or, in a folder from before the record, beside a comparison.md)."""
    split = os.path.join(tiny_data, "test")
    out = tmp_path / "reports"
    out.mkdir()
    (out / "2024-03-report.md").write_text(u"mine")
    (out / "7-scan-roc.png").write_text(u"mine too")
    argv = ["evaluate", "--model-dir", tiny_bundle, split, "--out", str(out), "--bootstrap", 0]
    code, o, err = run_cli(argv)
    assert code == 0, err
    code, o, err = run_cli(argv + ["--model-dir", tiny_bundle, "--overwrite"])  # two models
    assert code == 0, err
    assert (out / "2024-03-report.md").read_text() == u"mine"
    assert (out / "7-scan-roc.png").read_text() == u"mine too"
    assert {"1-model-report.md", "2-model-roc.png", "comparison.md"} <= set(os.listdir(str(out)))
    code, o, err = run_cli(argv)  # the numbered ones this run wrote are known as its own
    assert code == 2 and "pass --overwrite" in err, err
    code, o, err = run_cli(argv + ["--overwrite"])
    assert code == 0, err
    names = set(os.listdir(str(out)))
    assert "1-model-report.md" not in names and "comparison.md" not in names, names
    assert {"2024-03-report.md", "7-scan-roc.png", "report.md"} <= names
    # a folder from before the record: numbered files beside a comparison.md are evaluate's
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("comparison.md", "1-a-report.md", "2-b-roc.png"):
        (legacy / name).write_text(u"earlier")
    code, o, err = run_cli(["evaluate", "--model-dir", tiny_bundle, split, "--out",
                            str(legacy), "--bootstrap", 0, "--overwrite"])
    assert code == 0, err
    assert not {"1-a-report.md", "2-b-roc.png"} & set(os.listdir(str(legacy)))
