# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of astro_unet.training._console: messages and progress lines on stderr."""

import sys

from astro_unet.training import _console


def test_message_rank_and_prefix(capsys):
    _console.message("hello")
    _console.message("not shown", rank=1)
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == "astro_unet.training: hello\n"


def test_messages_go_through_a_running_bar(monkeypatch, capsys):
    written = []

    class Bar:
        def write(self, text, file=None):
            written.append((text, file))

    monkeypatch.setattr(_console, "_active", Bar())
    _console.message("during the run")
    assert written == [("astro_unet.training: during the run", sys.stderr)]
    assert capsys.readouterr().err == ""


def test_progress_lines_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)     # as if tqdm were not installed
    bar = _console.ProgressBar(10, 0, True)
    assert bar.bar is None
    bar.update(1, loss="1")
    bar.line("step 1/10")
    bar.close()
    _console.ProgressBar(10, 0, False).line("hidden")
    assert capsys.readouterr().err == "step 1/10\n"


def test_a_tqdm_bar_carries_the_messages_until_closed(monkeypatch, capsys):
    import types

    events = []

    class FakeTqdm:
        def __init__(self, **kw):
            events.append(("new", kw["total"], kw["initial"]))

        @staticmethod
        def write(text, file=None):
            events.append(("write", text))

        def update(self, n):
            events.append(("update", n))

        def set_postfix(self, postfix, refresh=False):
            events.append(("postfix", dict(postfix)))

        def close(self):
            events.append(("close",))

    monkeypatch.setitem(sys.modules, "tqdm.auto", types.SimpleNamespace(tqdm=FakeTqdm))
    bar = _console.ProgressBar(10, 2, True)
    _console.message("pool ready")
    bar.update(1, loss="0.5")
    bar.line("step 3: val_l1=0.1")
    bar.close()
    _console.message("exported")
    assert events == [("new", 10, 2), ("write", "astro_unet.training: pool ready"),
                      ("update", 1), ("postfix", {"loss": "0.5"}),
                      ("write", "step 3: val_l1=0.1"), ("close",)]
    assert capsys.readouterr().err == "astro_unet.training: exported\n"
