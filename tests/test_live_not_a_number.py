"""A model whose output is not a number (NaN: weights a diverged training run left, an FP16
overflow in an engine) in classify's live loop: it printed 'imagenet:  0nan% class #0
(benign)', drew 'nan% benign' on every frame and ended 0, and one such frame left the
smoothing NaN for good. Each such frame is now a failure, with what happened drawn on it
instead of a class, and the smoothing leaves it out."""
import os

import numpy as np

from conftest import run_cli


def _png_copies(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".png"))


def test_classify_a_folder_records_each_frame_as_a_failure(nan_bundle, tiny_data, tmp_path,
                                                           caplog):
    from oncolens.appliance.imageio import read_image
    from oncolens.appliance.overlay import draw_lines
    from oncolens.appliance.postprocess import NOT_A_NUMBER_OVERLAY
    folder = os.path.join(tiny_data, "test", "benign")
    out = str(tmp_path / "out") + os.sep
    code, stdout, err = run_cli(["classify", "--model", nan_bundle, "--backend", "onnxruntime",
                                 folder, out, "--headless"])
    assert code == 1, err
    assert "nan" not in stdout.lower().replace("not a number (nan", ""), stdout
    assert "% class #" not in stdout
    assert stdout.count("not a number") == 3, stdout
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert sum("is not a number" in e for e in errors) == 3, errors
    assert any(e.startswith(os.path.join(folder, "benign_test_0000.png")) for e in errors)
    # each frame is drawn with what happened, not a class
    names = _png_copies(out)
    assert len(names) == 3
    for name in names:
        got = read_image(os.path.join(out, name))
        want = draw_lines(read_image(os.path.join(folder, name)), [NOT_A_NUMBER_OVERLAY])
        assert np.array_equal(got, want), name


def test_the_live_loop_keeps_smoothing_past_a_frame_that_is_not_a_number(tiny_bundle,
                                                                          tiny_data):
    """One frame's output NaN (an overflow on that frame alone): it is a failed frame, and
    the smoothing state is not poisoned: the frames after it are classified as before."""
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.loop import LiveLoop
    from oncolens.appliance.sources import open_source
    with Classifier.open(tiny_bundle, backend="onnxruntime") as clf:
        infer = clf.infer_tensor
        calls = []

        def second_nan(batch):
            result = infer(batch)
            calls.append(1)
            if len(calls) == 2:
                result.probs[0, 0] = float("nan")
            return result
        clf.infer_tensor = second_nan
        loop = LiveLoop(clf, open_source(os.path.join(tiny_data, "test", "malignant")),
                        smoothing=0.5)
        seen = []
        process = loop.process
        loop.process = lambda frame: seen.append(process(frame))
        stats = loop.run()
    assert stats.failed == 1 and stats.frames == 2  # classified; the NaN one failed
    assert seen[1] == [] and all(np.isfinite(p[0].confidence) for p in (seen[0], seen[2]))
