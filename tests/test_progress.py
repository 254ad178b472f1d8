import io

from dartsnas.train.progress import Progress


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_draws_on_a_terminal_only():
    tty = FakeTTY()
    bar = Progress(4, "epoch 1/2", stream=tty, min_interval=0.0)
    for _ in range(4):
        bar.update(16, loss=1.5, acc=0.25)
    bar.close()
    text = tty.getvalue()
    assert "\r" in text and "4/4" in text and "loss 1.5" in text and "img/s" in text and "eta" in text
    plain = io.StringIO()
    bar = Progress(4, "epoch 1/2", stream=plain)
    bar.update(16, loss=1.0)
    bar.close()
    assert plain.getvalue() == "" and bar.items == 16
    quiet = FakeTTY()
    Progress(4, "x", stream=quiet, enabled=False).update(1)
    assert quiet.getvalue() == ""
