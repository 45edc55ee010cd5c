"""The model bundle contract: every error is one clear line naming both sides."""
import json
import os
import shutil

import pytest

from conftest import run_cli
from oncolens.appliance import bundle
from oncolens.appliance.errors import BundleError
from oncolens.appliance.preprocess import imagenet_preprocess


@pytest.fixture
def bundle_dir(tiny_bundle, tmp_path):
    out = str(tmp_path / "b")
    shutil.copytree(tiny_bundle, out)
    return out


def _edit(path, **changes):
    with open(path) as fh:
        info = json.load(fh)
    info.update(changes)
    with open(path, "w") as fh:
        json.dump(info, fh)


def test_roundtrip(tmp_path):
    info = bundle.new_model_info("resnet18", ["a", "b"], 64, imagenet_preprocess(64))
    path = str(tmp_path / "model.json")
    bundle.write_model_info(path, info)
    assert bundle.read_model_info(path) == info
    bundle.write_labels(str(tmp_path / "labels.txt"), ["a", "b"])
    assert bundle.read_labels(str(tmp_path / "labels.txt")) == ["a", "b"]



def test_labels_txt_that_cannot_be_written_whole_leaves_the_earlier_one(tmp_path):
    """write_labels wrote in place: a failure midway (a full disk; a name UTF-8 cannot
    hold) left a labels.txt of half the classes. It is written beside it first."""
    path = str(tmp_path / "labels.txt")
    bundle.write_labels(path, ["a", "b"])
    with pytest.raises(UnicodeEncodeError):
        bundle.write_labels(path, ["x", "caf\udce9", "z"])
    assert bundle.read_labels(path) == ["a", "b"]
    assert os.listdir(str(tmp_path)) == ["labels.txt"]

def test_missing_files(tmp_path):
    with pytest.raises(BundleError, match="model not found: .*nope"):
        bundle.load_bundle(str(tmp_path / "nope"))
    with pytest.raises(BundleError, match="no model.json and no labels file: pass --labels"):
        bundle.load_bundle(str(tmp_path))
    with pytest.raises(BundleError, match="labels file not found"):
        bundle.read_labels(str(tmp_path / "labels.txt"))


def test_unknown_key_from_newer_version(bundle_dir):
    path = os.path.join(bundle_dir, "model.json")
    _edit(path, quantum_flux=1)
    with pytest.raises(BundleError, match=r"unknown key\(s\) 'quantum_flux' \(written by a newer"):
        bundle.load_bundle(bundle_dir)


def test_newer_schema(bundle_dir):
    _edit(os.path.join(bundle_dir, "model.json"), schema=99)
    with pytest.raises(BundleError, match="written by a newer OncoLens .schema 99"):
        bundle.load_bundle(bundle_dir)


def test_labels_count_differs_from_model_outputs(bundle_dir):
    from oncolens.appliance.classifier import Classifier
    os.remove(os.path.join(bundle_dir, "model.json"))
    labels = os.path.join(bundle_dir, "labels.txt")
    with open(labels, "a") as fh:
        fh.write("extra\n")
    with pytest.raises(BundleError) as err:
        Classifier.open(os.path.join(bundle_dir, "resnet18.onnx"), labels=labels,
                        backend="onnxruntime")
    msg = str(err.value)
    assert "lists 4 classes" in msg and "resnet18.onnx has 3 outputs" in msg
    assert "\n" not in msg


def test_labels_file_disagrees_with_model_json(bundle_dir, tmp_path):
    other = str(tmp_path / "labels.txt")
    bundle.write_labels(other, ["x", "y", "z"])
    with pytest.raises(BundleError, match="lists .* but .*model.json lists"):
        bundle.load_bundle(bundle_dir, labels=other)


def test_wrong_blob_name_names_the_alternatives(tiny_bundle):
    from oncolens.appliance.classifier import Classifier
    with pytest.raises(BundleError, match="has no input named 'data' .it has: input_0.: pass "
                                          "--input-blob"):
        Classifier.open(tiny_bundle, input_blob="data", backend="onnxruntime")


def test_invalid_json_and_num_classes(bundle_dir):
    path = os.path.join(bundle_dir, "model.json")
    _edit(path, num_classes=5)
    with pytest.raises(BundleError, match="'num_classes' is 5 but 'labels' has 3"):
        bundle.load_bundle(bundle_dir)
    with open(path, "w") as fh:
        fh.write("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        bundle.load_bundle(bundle_dir)


@pytest.mark.parametrize("key, value, says", [
    ("input", "x", "'input' must be a JSON object, got 'x'"),
    ("output", [], "'output' must be a JSON object, got []"),
    ("preprocess", None, "'preprocess' must be a JSON object, got None"),
    ("onnx", "resnet18.onnx", "'onnx' must be a JSON object"),
    ("engines", {"a": 1}, "'engines' must be a list of objects"),
    ("preprocess", {"resize": "center_crop", "mean": "abc"}, "'preprocess.mean' must be 3 "
                                                              "numbers"),
    ("preprocess", {"resize": "center_crop", "std": [1, 2]}, "'preprocess.std' must be 3"),
])
def test_a_hand_edited_section_of_the_wrong_type_is_one_line(bundle_dir, key, value, says):
    _edit(os.path.join(bundle_dir, "model.json"), **{key: value})
    with pytest.raises(BundleError) as err:
        bundle.load_bundle(bundle_dir)
    assert says in str(err.value) and "model.json" in str(err.value)
    for argv in (["export", "check"], ["export", "verify", "--count", 2]):
        code, out, err = run_cli(argv + ["--model-dir", bundle_dir])
        assert code == 1 and says in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("section, key, value, says", [
    ("preprocess", "crop_ratio", 0, "'preprocess.crop_ratio' must be a number in (0, 1]"),
    ("preprocess", "std", [0.2, 0, 0.2], "'preprocess.std' must be 3 numbers above 0"),
    ("preprocess", "resize", "letterbox", "'preprocess.resize' must be one of"),
    ("onnx", "file", 5, "'onnx.file' must be a file name, got 5"),
    # a traceback (TypeError, AttributeError, ValueError, KeyError) in each of these
    ("output", "name", [1], "'output.name' must be a tensor name"),
    ("preprocess", "clahe", "yes", "'preprocess.clahe' must be null or"),
    ("preprocess", "clahe", {"clip": "a"}, "'preprocess.clahe' must be null or"),
    ("engines", None, [{"precision": "fp16"}], "each of 'engines' must name its 'file'"),
    # taken for "linear" in silence
    ("preprocess", "interpolation", "cubic", "'preprocess.interpolation' must be one of"),
    # read as logits in silence: Softmax applied to what may already be probabilities
    ("output", "activation", "sigmoid", "'output.activation' must be one of softmax, none "
                                        "(none: the output is logits), got 'sigmoid'"),
    ("output", "activation", "Softmax", "'output.activation' must be one of softmax, none"),
])
def test_a_hand_edited_value_that_cannot_work_is_one_line(bundle_dir, tiny_data, section, key,
                                                          value, says):
    """A crop ratio of 0 or an ONNX file name that is not a string ended evaluate and the
    export verify in a traceback (ZeroDivisionError, TypeError); a std of 0 gave inf inputs
    and a resize policy of another version was taken for center_crop, both in silence."""
    path = os.path.join(bundle_dir, "model.json")
    with open(path) as fh:
        section_now = json.load(fh)[section]
    if key is None:
        section_now = value
    else:
        section_now[key] = value
    _edit(path, **{section: section_now})
    for argv in (["export", "verify", "--model-dir", bundle_dir, "--count", 2],
                 ["evaluate", "--model-dir", bundle_dir, os.path.join(tiny_data, "test"),
                  "--bootstrap", 0]):
        code, out, err = run_cli(argv)
        assert code == 1 and says in err and "model.json" in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def _bare(tiny_bundle, tmp_path, labels=True):
    """A jetson-inference style folder: the ONNX (32 px input) and labels.txt, no model.json."""
    out = tmp_path / "bare"
    out.mkdir()
    shutil.copy(os.path.join(tiny_bundle, "resnet18.onnx"), str(out))
    if labels:
        shutil.copy(os.path.join(tiny_bundle, "labels.txt"), str(out))
    return str(out)


def test_missing_labels_file_is_named_and_verify_is_not_told_to_pass_labels(tiny_bundle,
                                                                          tmp_path):
    d = _bare(tiny_bundle, tmp_path, labels=False)
    missing = str(tmp_path / "nothere.txt")
    with pytest.raises(BundleError) as err:
        bundle.load_bundle(os.path.join(d, "resnet18.onnx"), labels=missing)
    assert str(err.value).startswith("--labels {}: labels file not found".format(missing))
    with pytest.raises(BundleError) as err:
        bundle.load_bundle(d, labels_flag=None)
    assert "--labels" not in str(err.value) and "no labels.txt" in str(err.value)
    code, _, err = run_cli(["export", "verify", "--model-dir", str(tmp_path / "nothing")])
    assert code != 0 and "--labels" not in err and len(err.strip().splitlines()) == 1


def test_labels_in_utf16_and_utf8_bom_are_read_and_garbage_is_one_line(tmp_path):
    path = str(tmp_path / "labels.txt")
    for encoding in ("utf-16", "utf-8-sig"):
        with open(path, "wb") as fh:
            fh.write(u"benign\r\nmalignant\r\nnormal\r\n".encode(encoding))
        assert bundle.read_labels(path) == ["benign", "malignant", "normal"]
    with open(path, "wb") as fh:
        fh.write(b"\xff\xfe bad\n")  # a UTF-16 BOM, then an odd number of bytes
    with pytest.raises(BundleError, match="labels file .*labels.txt: not readable as UTF-16"):
        bundle.read_labels(path)
    with open(path, "wb") as fh:
        fh.write(b"caf\xe9\n")  # Latin-1
    with pytest.raises(BundleError, match="not readable as UTF-8 text"):
        bundle.read_labels(path)


def test_bare_folder_takes_its_input_size_from_the_onnx(tiny_bundle, tmp_path):
    d = _bare(tiny_bundle, tmp_path)
    assert bundle.load_bundle(d).input_shape == (3, 32, 32)
    assert bundle.load_bundle(os.path.join(d, "resnet18.onnx")).input_shape == (3, 32, 32)


def test_an_onnx_older_than_the_model_json_is_not_used_silently(tiny_bundle, tiny_data,
                                                                  tmp_path):
    """Training again rewrites model.json without an export record: the ONNX left in the
    folder is the earlier model's, and classify must not pass it off as the new one."""
    folder = str(tmp_path / "model")
    shutil.copytree(tiny_bundle, folder, ignore=shutil.ignore_patterns("variants"))
    path = os.path.join(folder, "model.json")
    with open(path) as fh:
        info = json.load(fh)
    onnx_file = os.path.join(folder, info.pop("onnx")["file"])
    with open(path, "w") as fh:
        json.dump(info, fh)
    src = os.path.join(tiny_data, "test", "normal")
    code, out, err = run_cli(["classify", "--model", folder, "--headless", src])
    assert code != 0 and "was exported before the model" in err and "export onnx" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = run_cli(["classify", "--model", onnx_file, "--headless", src])
    assert code == 0, err  # named explicitly: used as asked
    code, out, err = run_cli(["batch", src, "--model", folder, "--backend", "torch",
                              "--no-progress"])
    assert code == 0, err  # the checkpoint is the current model


def test_an_onnx_file_that_model_json_does_not_describe_is_refused(tiny_bundle, tmp_path):
    """--model DIR/file.onnx beside a model.json recording another export: model.json's
    activation would be applied to the wrong network (Softmax twice on a Softmax export, or
    none on a logits one), so the confidences would be wrong. Refused, naming both files; a
    byte-identical copy is accepted; with no export recorded, the graph says what it ends in."""
    import numpy as np
    folder = str(tmp_path / "rx")
    shutil.copytree(tiny_bundle, folder, ignore=shutil.ignore_patterns("variants"))
    softmax_onnx = os.path.join(folder, "resnet18.onnx")
    shutil.copy(softmax_onnx, os.path.join(folder, "copy.onnx"))
    assert bundle.load_bundle(os.path.join(folder, "copy.onnx")).info["output"][
        "activation"] == "softmax"
    code, out, err = run_cli(["export", "onnx", "--model-dir", folder, "--output=logits.onnx",
                              "--no-activation"])
    assert code == 0, err
    with pytest.raises(BundleError) as err_info:
        bundle.load_bundle(softmax_onnx)
    message = str(err_info.value)
    assert "describes logits.onnx" in message and "not this file" in message
    assert "--model {}".format(folder) in message
    assert bundle.load_bundle(folder).info["output"]["activation"] == "none"
    # no export recorded: each file is read as its graph says
    path = os.path.join(folder, "model.json")
    with open(path) as fh:
        info = json.load(fh)
    info.pop("onnx")
    with open(path, "w") as fh:
        json.dump(info, fh)
    from oncolens.appliance.classifier import Classifier
    image = (np.random.RandomState(0).rand(40, 40, 3) * 255).astype(np.uint8)
    probs = []
    for name in ("resnet18.onnx", "logits.onnx"):
        with Classifier.open(os.path.join(folder, name), backend="onnxruntime") as clf:
            probs.append(clf.infer_images([image]).probs[0])
    assert np.allclose(probs[0], probs[1], atol=1e-5) and abs(probs[0].sum() - 1) < 1e-5


def test_synset_ids_before_class_names_are_dropped_as_jetson_inference_does(tmp_path):
    path = tmp_path / "synset.txt"
    path.write_text("n01440764 benign\nn01443537  malignant lesion\nnormal\nn0144 short\n")
    assert bundle.read_labels(str(path)) == ["benign", "malignant lesion", "normal",
                                             "n0144 short"]
    path.write_text("n02012849 crane\nn03126707 crane\nn01440764 tench, Tinca tinca\n")
    assert bundle.read_labels(str(path)) == ["n02012849 crane", "n03126707 crane",
                                             "n01440764 tench, Tinca tinca"]


def test_a_folder_given_as_labels_file_is_named(tmp_path):
    with pytest.raises(BundleError, match="is a folder: expected a text file"):
        bundle.read_labels(str(tmp_path))


def _count_model_loads(monkeypatch):
    """Count every onnx.load and ONNX Runtime session from here on."""
    import onnx
    import onnxruntime
    counts = {"onnx.load": 0, "InferenceSession": 0}
    real_load, real_session = onnx.load, onnxruntime.InferenceSession

    def load(*args, **kwargs):
        counts["onnx.load"] += 1
        return real_load(*args, **kwargs)

    def session(*args, **kwargs):
        counts["InferenceSession"] += 1
        return real_session(*args, **kwargs)

    monkeypatch.setattr(onnx, "load", load)
    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    return counts


@pytest.mark.parametrize("onnx_package", ["installed", "absent"])
def test_a_bare_onnx_is_loaded_once_by_the_backend(tiny_bundle, tmp_path, monkeypatch,
                                                   onnx_package):
    """load_bundle reads a bare export's input size from the file itself: ONNX Runtime's
    session is the only load (it used to be parsed by onnx.load first, or, without the onnx
    package, opened in a second ONNX Runtime session)."""
    import sys
    from oncolens.appliance.classifier import Classifier
    d = _bare(tiny_bundle, tmp_path)
    counts = _count_model_loads(monkeypatch)
    if onnx_package == "absent":
        monkeypatch.setitem(sys.modules, "onnx", None)  # as on a host with onnxruntime only
    for model in (d, os.path.join(d, "resnet18.onnx")):
        for backend in ("onnxruntime", "auto"):
            counts.update({"onnx.load": 0, "InferenceSession": 0})
            with Classifier.open(model, backend=backend) as clf:
                assert clf.backend.name == "onnxruntime"
                assert clf.bundle.input_shape == (3, 32, 32)
                assert clf.preprocessor.height == 32
            assert counts == {"onnx.load": 0, "InferenceSession": 1}, (model, backend)
    # before any backend (export verify, bench): the input size is known, nothing loaded
    counts.update({"onnx.load": 0, "InferenceSession": 0})
    assert bundle.load_bundle(d).input_shape == (3, 32, 32)
    assert counts == {"onnx.load": 0, "InferenceSession": 0}


def _onnx_view(path):
    """What the onnx package reads: {input: dims}, {output tensor: op_type}."""
    import onnx
    graph = onnx.load(path, load_external_data=False).graph
    inputs = {v.name: [d.dim_value if d.HasField("dim_value") else None
                       for d in v.type.tensor_type.shape.dim]
              if v.type.tensor_type.HasField("shape") else None for v in graph.input}
    producers = {out: node.op_type for node in graph.node for out in node.output}
    return inputs, producers


def test_onnx_info_reads_what_the_onnx_package_reads(tiny_bundle, tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from oncolens.appliance.onnxinfo import read_onnx_info
    from oncolens.appliance.variants import dynamic_batch
    weights = numpy_helper.from_array(np.ones((3, 40000), np.float32), "w")  # skipped, unread
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"], name="mm"),
         helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
         helper.make_node("Relu", ["mask"], ["mask_out"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, None),
         helper.make_tensor_value_info(u"入力", TensorProto.FLOAT, [1, 3, 300, 2 ** 40])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 40000])],
        initializer=[weights])
    made = str(tmp_path / "made.onnx")
    onnx.save(helper.make_model(graph), made)
    paths = [made, os.path.join(tiny_bundle, "resnet18.onnx"),
             dynamic_batch(bundle.load_bundle(tiny_bundle)).model_path]
    for path in paths:
        info = read_onnx_info(path)
        assert (info.inputs, info.producers) == _onnx_view(path), path
    info = read_onnx_info(made)
    assert info.inputs["x"] == [None, 3] and info.inputs["mask"] is None
    assert info.input_shape(u"入力") == [3, 300, 2 ** 40] and info.input_shape("x") is None
    assert info.output_activation("prob") == "softmax"
    assert info.output_activation("logits") == "none"
    assert info.output_activation("nothing") is None
    assert read_onnx_info(paths[2]).input_shape("input_0") == [3, 32, 32]
    # not an ONNX file, an empty one, a cut one: None (the backend says why)
    for name, data in (("text.onnx", b"not a model\n"), ("empty.onnx", b""),
                       ("cut.onnx", open(paths[1], "rb").read()[:5000])):
        path = str(tmp_path / name)
        with open(path, "wb") as fh:
            fh.write(data)
        assert read_onnx_info(path) is None, name
    assert read_onnx_info(str(tmp_path / "missing.onnx")) is None
