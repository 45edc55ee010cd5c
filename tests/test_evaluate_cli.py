"""`oncolens evaluate` on an exported bundle: JSON, figures, report, comparison."""
import json
import os

import pytest

from conftest import run_cli


def test_evaluate_json_report_and_figures(tmp_path, tiny_bundle, tiny_data):
    json_path = str(tmp_path / "m.json")
    out_dir = str(tmp_path / "eval")
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle,
                              os.path.join(tiny_data, "test"), "--json", json_path,
                              "--out", out_dir])
    assert code == 0, err
    with open(json_path) as fh:
        report = json.load(fh)
    for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix", "labels", "ece",
                "roc_auc_macro", "reliability"):
        assert key in report
    assert report["labels"] == ["benign", "malignant", "normal"]
    assert sum(map(sum, report["confusion_matrix"])) == report["count"] == 9
    assert set(report["per_class"]) == set(report["labels"])
    assert "appliance" in report["runner"]
    for name in ("report.md", "confusion.png", "roc.png", "reliability.png"):
        assert os.path.getsize(os.path.join(out_dir, name)) > 0
    markdown = open(os.path.join(out_dir, "report.md")).read()
    assert "| benign |" in markdown
    low, high = report["ci"]["macro_f1"]
    assert low <= report["macro_f1"] <= high and report["ci"]["rounds"] == 1000
    assert "macro-F1 **{:.3f}** (95% CI {:.3f}-{:.3f})".format(
        report["macro_f1"], low, high) in markdown
    # the printed summary has the figures TRAINING.md says it prints
    assert "accuracy {:.4f}  balanced accuracy {:.4f}  macro-F1 {:.4f}".format(
        report["accuracy"], report["balanced_accuracy"], report["macro_f1"]) in out
    # the checkpoint through torch gives the same numbers as the ONNX model
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, "--backend", "torch",
                              os.path.join(tiny_data, "test"), "--json", json_path,
                              "--overwrite", "--out", str(tmp_path / "eval2")])
    assert code == 0, err
    with open(json_path) as fh:
        torch_report = json.load(fh)
    assert torch_report["confusion_matrix"] == report["confusion_matrix"]
    assert torch_report["ece"] == pytest.approx(report["ece"], abs=1e-4)


def test_evaluate_compares_models(tmp_path, tiny_bundle, tiny_data):
    out_dir = str(tmp_path / "cmp")
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, "--model-dir", tiny_bundle,
                              os.path.join(tiny_data, "test"), "--out", out_dir])
    assert code == 0, err
    table = open(os.path.join(out_dir, "comparison.md")).read()
    assert table.count("| arch |") == 1 and table.count("| resnet18 |") == 2
    assert "| 95% CI |" in table
    # two models with one folder name are told apart by their paths
    assert table.count("| {} | resnet18 |".format(os.path.abspath(tiny_bundle))) == 2


def test_evaluate_bootstrap_off_and_bad_value(tmp_path, tiny_bundle, tiny_data):
    json_path = str(tmp_path / "m.json")
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, "--bootstrap", "0",
                              os.path.join(tiny_data, "test"), "--json", json_path,
                              "--out", str(tmp_path / "e")])
    assert code == 0, err
    with open(json_path) as fh:
        assert json.load(fh)["ci"] is None
    assert "95% CI" not in open(str(tmp_path / "e" / "report.md")).read()
    for rounds in ("-5", "1", "99"):  # 1..99 rounds cannot make a 95% interval
        code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, "--bootstrap", rounds,
                                  os.path.join(tiny_data, "test")])
        assert code == 2 and err == ("oncolens evaluate: error: --bootstrap: expected 0 (no "
                                     "intervals) or at least 100 rounds for a 95% interval, "
                                     "got {}\n".format(rounds)), (rounds, err)
        assert out == ""


def test_evaluate_unknown_class_folder(tmp_path, tiny_bundle, tiny_data):
    split = tmp_path / "odd"
    (split / "cats").mkdir(parents=True)
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, str(split)])
    assert code != 0 and "cats" in err and "labels" in err


def test_evaluate_warns_when_the_split_was_trained_on(tmp_path, tiny_bundle, tiny_data, caplog):
    import shutil
    model_dir = str(tmp_path / "ff")
    shutil.copytree(tiny_bundle, model_dir)
    path = os.path.join(model_dir, "model.json")
    with open(path) as fh:
        info = json.load(fh)
    info["metrics"], info["training"]["final_fit"] = {"val": None, "fit_on": ["train", "val"]}, True
    with open(path, "w") as fh:  # as a --final-fit run records it
        json.dump(info, fh)
    json_path, out_dir = str(tmp_path / "m.json"), str(tmp_path / "e")
    for split, trained in (("val", True), ("test", False)):
        caplog.clear()
        code, out, err = run_cli(["evaluate", "--model-dir", model_dir, "--bootstrap", 0,
                                  os.path.join(tiny_data, split), "--json", json_path,
                                  "--out", out_dir, "--overwrite"])
        assert code == 0, err
        with open(json_path) as fh:
            assert json.load(fh)["trained_on_split"] == ("val" if trained else None)
        report = open(os.path.join(out_dir, "report.md")).read()
        warnings = [r.getMessage() for r in caplog.records if "held-out" in r.getMessage()]
        if trained:
            assert "**Warning: not held-out.**" in report and "--final-fit" in report
            assert len(warnings) == 1 and "val/ and was part of training" in warnings[0]
        else:
            assert "held-out" not in report and not warnings
    # a model trained the usual way was fit on train/ only
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, "--bootstrap", 0,
                              os.path.join(tiny_data, "train"), "--json", json_path,
                              "--out", out_dir, "--overwrite"])
    assert code == 0, err
    with open(json_path) as fh:
        assert json.load(fh)["trained_on_split"] == "train"


def test_several_models_a_failing_one_is_recorded_and_the_rest_go_on(tmp_path, tiny_bundle,
                                                                     tiny_data):
    """One model that cannot be evaluated (a class folder it does not know, a broken
    model.json) no longer ends a comparison: the others are reported, the JSON and
    comparison.md are written with the failures listed, and the exit code is 1."""
    import shutil
    two = tmp_path / "two-class data"
    for split in ("train", "val", "test"):
        for cls in ("benign", "malignant"):
            shutil.copytree(os.path.join(tiny_data, split, cls), str(two / split / cls))
    small = str(tmp_path / "two classes")
    code, out, err = run_cli(["train", str(two), "--model-dir", small, "--arch", "simple-cnn",
                              "--resolution", 32, "--epochs", 1, "-j", 0, "--no-pretrained"])
    assert code == 0, err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text(u"{not json")
    json_path, out_dir = str(tmp_path / "cmp.json"), str(tmp_path / "cmp")
    code, out, err = run_cli(["evaluate", "--model-dir", small, "--model-dir", tiny_bundle,
                              "--model-dir", str(broken), os.path.join(tiny_data, "test"),
                              "--json", json_path, "--out", out_dir, "--bootstrap", 0])
    assert code == 1, err
    assert "2 of 3 models could not be evaluated" in err and "Traceback" not in err
    with open(json_path) as fh:
        payload = json.load(fh)
    assert [m["model_dir"] for m in payload["models"]] == [os.path.abspath(tiny_bundle)]
    assert payload["models"][0]["count"] == 9
    failed = {f["model_dir"]: f["error"] for f in payload["not_evaluated"]}
    assert "normal" in failed[os.path.abspath(small)]
    assert "not valid JSON" in failed[str(broken)]
    table = open(os.path.join(out_dir, "comparison.md")).read()
    assert "| model |" in table and "Not evaluated: {}".format(str(broken)) in table
    assert os.path.isfile(os.path.join(out_dir, "2-model-report.md"))
    # models with different classes: a recall column for every class, n/a where it has none
    split = str(two / "test")
    code, out, err = run_cli(["evaluate", "--model-dir", small, "--model-dir", tiny_bundle,
                              split, "--out", str(tmp_path / "cmp2"), "--bootstrap", 0])
    assert code == 0, err
    table = open(str(tmp_path / "cmp2" / "comparison.md")).read()
    assert "recall normal" in table and "On `{}` (6 images)".format(split) in table
    rows = [l for l in table.splitlines() if l.startswith("| two classes |")]
    assert len(rows) == 1 and rows[0].split(" | ")[10] == "n/a", table


def test_report_links_its_figures_when_the_model_folder_has_spaces(tmp_path, tiny_bundle,
                                                                   tiny_data):
    """Several models write '<n>-<folder name>-roc.png': a folder name with a space or
    brackets made the Markdown image links break (CommonMark ends a link at a space)."""
    import re
    import shutil
    from urllib.parse import unquote
    named = str(tmp_path / "run 2 (seed 1) é")
    shutil.copytree(tiny_bundle, named)
    out_dir = str(tmp_path / "cmp")
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, "--model-dir", named,
                              os.path.join(tiny_data, "test"), "--out", out_dir,
                              "--bootstrap", 0])
    assert code == 0, err
    report = open(os.path.join(out_dir, "2-run 2 (seed 1) é-report.md"), encoding="utf-8").read()
    links = re.findall(r"!\[[^\]]*\]\(([^()\s]+)\)", report)
    assert len(links) == 3, report
    for link in links:
        assert os.path.isfile(os.path.join(out_dir, unquote(link))), link


def test_a_class_with_no_images_in_the_split_has_no_recall(tmp_path, tiny_bundle, tiny_data,
                                                           caplog):
    """A split without one of the model's classes (its folder missing, or empty) printed
    'recall 0.000' for it, as if the model had missed every one of its images."""
    import shutil
    split = tmp_path / "no normal"
    for cls in ("benign", "malignant"):
        shutil.copytree(os.path.join(tiny_data, "test", cls), str(split / cls))
    (split / "normal").mkdir()  # an empty class folder: as good as a missing one
    json_path, out_dir = str(tmp_path / "m.json"), str(tmp_path / "e")
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, str(split), "--json",
                              json_path, "--out", out_dir, "--bootstrap", 0])
    assert code == 0, err
    with open(json_path) as fh:
        report = json.load(fh)
    assert report["absent_classes"] == ["normal"] and report["count"] == 6
    assert report["per_class"]["normal"]["support"] == 0
    line = [l for l in out.splitlines() if l.strip().startswith("normal")][0]
    assert "recall n/a" in line and "support 0" in line, out
    assert "recall 0.000" not in line
    markdown = open(os.path.join(out_dir, "report.md")).read()
    assert "has no images of normal" in markdown
    row = [l for l in markdown.splitlines() if l.startswith("| normal | ")][0]
    assert row.split(" | ")[2] == "n/a", row
    assert any("has no images of normal" in r.getMessage() for r in caplog.records)


def test_a_class_never_predicted_has_no_precision(tmp_path, tiny_bundle, tiny_data):
    """A class the model predicted for no image printed 'precision 0.000' (scikit-learn's
    zero_division), as if every prediction of it had been wrong; the JSON keeps 0.0."""
    import shutil
    import torch
    model_dir = str(tmp_path / "m")
    shutil.copytree(tiny_bundle, model_dir)
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            ckpt["state_dict"]["fc.bias"][2] = -1e4  # labels: benign, malignant, normal
            torch.save(ckpt, path)
    json_path, out_dir = str(tmp_path / "m.json"), str(tmp_path / "e")
    code, out, err = run_cli(["evaluate", "--model-dir", model_dir, "--backend", "torch",
                              os.path.join(tiny_data, "test"), "--json", json_path, "--out",
                              out_dir, "--bootstrap", 0])
    assert code == 0, err
    with open(json_path) as fh:
        report = json.load(fh)
    assert [row[2] for row in report["confusion_matrix"]] == [0, 0, 0]
    assert report["per_class"]["normal"]["precision"] == 0.0
    line = [l for l in out.splitlines() if l.strip().startswith("normal")][0]
    assert "precision n/a (never predicted)" in line, out
    assert "precision 0.000" not in line
    row = [l for l in open(os.path.join(out_dir, "report.md")).read().splitlines()
           if l.startswith("| normal | ")][0]
    assert row.split(" | ")[1] == "n/a (never predicted)", row
    for k, label in enumerate(report["labels"]):  # a class it did predict keeps its figure
        line = [l for l in out.splitlines() if l.strip().startswith(label + " ")][0]
        never = not any(row[k] for row in report["confusion_matrix"])
        assert ("precision n/a (never predicted)" in line) == never, out


def test_the_roc_figure_of_a_split_of_one_class_names_the_undefined_curves(
        tmp_path, tiny_bundle, tiny_data, recwarn):
    """With one class in the split no ROC curve is defined (that class has no negatives, the
    others no positives): roc.png was an empty plot, and matplotlib warned 'No artists with
    labels found to put in legend'. Now the title names the classes and why, with no legend
    and no warning."""
    import shutil
    import cv2
    from oncolens.train.plots import roc_undefined
    split = tmp_path / "benign only"
    shutil.copytree(os.path.join(tiny_data, "test", "benign"), str(split / "benign"))
    json_path, out_dir = str(tmp_path / "m.json"), str(tmp_path / "e")
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, str(split), "--json",
                              json_path, "--out", out_dir, "--bootstrap", 0])
    assert code == 0, err
    shown = [str(w.message) for w in recwarn
             if "legend" in str(w.message) or w.filename.endswith("plots.py")]
    assert shown == []
    image = cv2.imread(os.path.join(out_dir, "roc.png"))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    with open(json_path) as fh:
        report = json.load(fh)
    assert all(row["roc_auc"] is None for row in report["per_class"].values())
    said = " ".join(roc_undefined(report))
    assert "ROC undefined for malignant, normal: the split has no image of them" in said
    assert "ROC undefined for benign: the split has no image of another class" in said
    report["per_class"]["malignant"]["roc_auc"] = 0.5  # a split with benign and malignant
    report["per_class"]["malignant"]["support"] = 3
    report["per_class"]["benign"]["roc_auc"] = 0.5
    assert roc_undefined(report) == ["ROC undefined for normal: the split has no image of it"]


def _dataset_copy(tiny_data, tmp_path, labels_txt, classes=("benign", "malignant", "normal")):
    """DATA/test with ``classes``' folders and DATA/labels.txt listing ``labels_txt``."""
    import shutil
    data = tmp_path / "data"
    for cls in classes:  # a class the synthetic data has not: benign's images
        shutil.copytree(os.path.join(tiny_data, "test", cls if cls != "cyst" else "benign"),
                        str(data / "test" / cls))
    (data / "labels.txt").write_text(u"".join(x + "\n" for x in labels_txt))
    return str(data / "test")


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_a_labels_txt_in_the_data_that_disagrees_with_the_model_is_said(
        tmp_path, tiny_bundle, tiny_data, caplog):
    """The dataset's labels.txt (DATA/labels.txt or the split's own) was never read: another
    order, or classes the model does not know, passed without a word."""
    model_json = os.path.join(tiny_bundle, "model.json")
    json_path = str(tmp_path / "m.json")
    argv = ["evaluate", "--model-dir", tiny_bundle, "--bootstrap", 0, "--json", json_path,
            "--out", str(tmp_path / "e")]
    code, out, err = run_cli(argv + [os.path.join(tiny_data, "test")])  # the same labels
    assert code == 0 and not _warnings(caplog), err
    with open(json_path) as fh:
        same = json.load(fh)["confusion_matrix"]
    # the same names in another order: a warning; the figures are by name, unchanged
    split = _dataset_copy(tiny_data, tmp_path, ["normal", "benign", "malignant"])
    code, out, err = run_cli(argv + ["--overwrite", split])
    assert code == 0, err
    (said,) = _warnings(caplog)
    labels_txt = os.path.join(os.path.dirname(split), "labels.txt")
    assert said.startswith(labels_txt + " lists the model's classes in another order")
    assert "normal, benign, malignant" in said and model_json in said
    with open(json_path) as fh:
        assert json.load(fh)["confusion_matrix"] == same
    # the split's own labels.txt is the nearer one: a class the model does not know, no folder
    caplog.clear()
    with open(os.path.join(split, "labels.txt"), "w") as fh:
        fh.write(u"benign\ncyst\nmalignant\nnormal\n")
    code, out, err = run_cli(argv + ["--overwrite", split])
    assert code == 0, err
    (said,) = _warnings(caplog)
    assert said.startswith(os.path.join(split, "labels.txt") + " lists benign, cyst, ")
    assert "(the model does not know cyst)" in said


def test_a_class_folder_the_model_does_not_know_is_one_line_naming_model_json(
        tmp_path, tiny_bundle, tiny_data, caplog):
    split = _dataset_copy(tiny_data, tmp_path, ["benign", "cyst", "malignant"],
                          classes=("benign", "cyst", "malignant"))
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, split, "--out",
                              str(tmp_path / "e")])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "class folder(s) cyst are not among the model's labels ({}: benign, malignant, " \
        "normal)".format(os.path.join(tiny_bundle, "model.json")) in err
    assert "the model does not know cyst" in " ".join(_warnings(caplog))


def test_a_split_of_fewer_classes_than_the_model_is_still_evaluated(tmp_path, tiny_bundle,
                                                                    tiny_data, caplog):
    split = _dataset_copy(tiny_data, tmp_path, ["benign", "malignant"],
                          classes=("benign", "malignant"))
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, split, "--bootstrap", 0,
                              "--out", str(tmp_path / "e")])  # not into the shared bundle
    assert code == 0, err
    assert any(w.startswith(os.path.join(os.path.dirname(split), "labels.txt") +
                            " lists benign, malignant but ") for w in _warnings(caplog))


def test_an_image_the_preprocessing_refuses_is_listed_and_the_rest_scored(tmp_path, tiny_bundle,
                                                                          tiny_data):
    """A test image too elongated for the model's preprocessing is a recorded failure in
    oncolens batch; evaluate stopped on it with a line that named no file, scoring nothing.
    It is now listed as unreadable, named, and the other images are scored."""
    import shutil
    import numpy as np
    from oncolens.appliance.imageio import write_image
    split = str(tmp_path / "test")
    shutil.copytree(os.path.join(tiny_data, "test"), split)
    strip = os.path.join(split, "benign", "strip.png")
    write_image(strip, np.full((1, 80000, 3), 90, dtype=np.uint8))  # 37 x 2.9 million at 32 px
    json_path = str(tmp_path / "m.json")
    code, out, err = run_cli(["evaluate", "--model-dir", tiny_bundle, split, "--json", json_path,
                              "--out", str(tmp_path / "eval"), "--bootstrap", 0])
    assert code == 1 and "1 image could not be read" in err, err
    assert "unreadable: {}: the image is 80000x1 pixels".format(strip) in out
    with open(json_path) as fh:
        report = json.load(fh)
    assert report["count"] == 9 and [f["path"] for f in report["failed"]] == [strip]
    assert "less extreme aspect ratio" in report["failed"][0]["error"]
