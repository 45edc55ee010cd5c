"""Live classify logged one error line per failed frame: a model that gives NaN for every
frame, or a camera whose every frame is refused, wrote ~30 lines a second (an SD card worn,
the log buried). The same error line is now logged once, then counted at most every 10 s;
each distinct error keeps its own line; a folder's failed files keep one line each. The
end-of-run counts: 'frames' the frames classified, 'failed' those given no class, whatever
the reason (a frame whose output was not a number was under both)."""
import logging
import os
import shutil

import numpy as np


class Camera(object):
    """A live source of ``total`` frames, all from one origin; ``broken`` frame indexes come
    with an error (as a frame that cannot be decoded does)."""

    kind, live, rate = "fake", True, None

    def __init__(self, total, broken=()):
        from oncolens.appliance.sources import Frame
        self.Frame, self.total, self.broken, self.index = Frame, total, set(broken), 0

    def describe(self):
        return "fake camera"

    def open(self):
        pass

    def close(self):
        pass

    def read(self):
        from oncolens.appliance.sources import EndOfStream
        if self.index >= self.total:
            raise EndOfStream()
        i = self.index
        self.index += 1
        image = np.full((40, 40, 3), 30, dtype=np.uint8)
        error = "fake://0: frame cannot be decoded" if i in self.broken else None
        return self.Frame(None if error else image, "fake://0", None, i, 0.0, error)


def _errors(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def _run(bundle, source):
    from oncolens.appliance.classifier import Classifier
    from oncolens.appliance.loop import LiveLoop
    with Classifier.open(bundle, backend="onnxruntime") as clf:
        loop = LiveLoop(clf, source)
        loop.errors.clock = lambda: getattr(source, "index", 0) * 0.5  # a frame each 0.5 s
        return loop.run()


def test_a_model_that_is_not_a_number_for_every_frame_logs_a_count_not_every_frame(
        nan_bundle, caplog):
    caplog.set_level(logging.INFO)
    stats = _run(nan_bundle, Camera(40))
    errors = _errors(caplog)
    assert len(errors) == 3, errors  # the first; at 10 s the 19 since; at the end the 20 since
    assert errors[0].startswith("fake://0: the model's output for this image is not a number")
    assert errors[1].startswith("the last 19 frame(s) failed the same way in 10 s: fake://0: "
                                "the model's output"), errors[1]
    assert errors[2].startswith("the last 20 frame(s) failed the same way in 10 s: "), errors[2]
    assert stats.failed == 40 and stats.frames == 0
    assert "40 frame(s) read: 0 classified, 40 failed" in caplog.text


def test_each_distinct_error_keeps_its_line(nan_bundle, caplog):
    stats = _run(nan_bundle, Camera(6, broken=(1, 3, 5)))
    errors = _errors(caplog)
    assert errors[0].startswith("fake://0: the model's output for this image is not a number")
    assert errors[1] == "fake://0: frame cannot be decoded"
    assert errors[2].startswith("the last 2 frame(s) failed the same way in ")
    assert errors[3].startswith("the last 2 frame(s) failed the same way in ")
    assert len(errors) == 4 and stats.failed == 6 and stats.frames == 0


def test_the_count_is_told_when_the_errors_stop(caplog):
    from oncolens.appliance.repeats import RepeatedErrors
    now = [0.0]
    log = logging.getLogger("oncolens.test.repeats")
    errors = RepeatedErrors(log, every=10, clock=lambda: now[0])
    for _ in range(5):
        errors.error("csi://0: refused")
        now[0] += 1
    now[0] = 12.0
    errors.tick()  # a good frame, 12 s after the first error
    assert _errors(caplog) == ["csi://0: refused",
                               "the last 4 frame(s) failed the same way in 12 s: csi://0: refused"]
    errors.tick()
    errors.flush()  # nothing left to tell
    assert len(_errors(caplog)) == 2
    errors.error("csi://0: refused")  # long after: a first line again
    assert _errors(caplog)[-1] == "csi://0: refused"


def test_a_folder_keeps_one_line_per_failed_file_and_one_count_per_frame(nan_bundle,
                                                                        tiny_data, tmp_path,
                                                                        caplog):
    from oncolens.appliance.sources import open_source
    folder = tmp_path / "in"
    shutil.copytree(os.path.join(tiny_data, "test", "benign"), str(folder))
    (folder / "broken.png").write_bytes(b"garbage")
    caplog.set_level(logging.INFO)
    source = open_source(str(folder))
    stats = _run(nan_bundle, source)
    errors = _errors(caplog)
    assert len(errors) == 4 and all(e.startswith(str(folder)) for e in errors), errors
    # the unreadable file and the three whose output is not a number count alike
    assert stats.frames == 0 and stats.failed == 4
    assert "4 frame(s) read: 0 classified, 4 failed" in caplog.text
