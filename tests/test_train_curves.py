"""curves.png is written beside itself and moved there whole, like every other output."""
import os

import pytest


def _rows(n):
    from oncolens.train.history import history_row
    summary = {"accuracy": 0.5, "macro_f1": 0.4}
    return [history_row(e + 1, 0.01, 1.0 / (e + 1), 0.9, summary, 1.0, 10.0, e == 0)
            for e in range(n)]


def test_a_stop_while_curves_png_is_written_leaves_the_earlier_one_whole(tmp_path,
                                                                          monkeypatch):
    """It was saved in place: Ctrl-C midway left half a PNG where the curves were."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    from oncolens.train.history import plot_history
    path = plot_history(str(tmp_path), _rows(2))
    with open(path, "rb") as fh:
        whole = fh.read()
    assert whole.startswith(b"\x89PNG")

    def stopped_midway(self, target, **kw):
        with open(target, "wb") as fh:
            fh.write(b"\x89PNG half")
        raise KeyboardInterrupt
    monkeypatch.setattr(Figure, "savefig", stopped_midway)
    with pytest.raises(KeyboardInterrupt):
        plot_history(str(tmp_path), _rows(3))
    with open(path, "rb") as fh:
        assert fh.read() == whole
    assert os.listdir(str(tmp_path)) == ["curves.png"]   # no temporary file left either
