import io

import pytest

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


@pytest.mark.parametrize("origin", [0.0, 5.0, 1e7])  # a clock read just after boot, or days later
def test_progress_reads_tensor_and_callable_metrics_only_when_it_draws(origin):
    import torch
    reads = []
    tty = FakeTTY()
    now = [origin]
    bar = Progress(50, "epoch 1/1", stream=tty, min_interval=3600.0, clock=lambda: now[0])
    for step in range(50):
        now[0] += 1.0
        bar.update(8, loss=torch.tensor(0.5), acc=lambda: reads.append(1) or 0.75)
    assert len(reads) == 2  # the first draw and the last step, not 50 host reads
    assert "loss 0.5" in tty.getvalue() and "acc 0.75" in tty.getvalue()


def test_progress_redraws_after_min_interval_of_its_clock():
    tty = FakeTTY()
    now = [100.0]
    bar = Progress(10, "e", stream=tty, min_interval=2.0, clock=lambda: now[0])
    draws = []
    for step in range(9):
        now[0] += 1.0
        before = tty.getvalue().count("\r")
        bar.update(1, loss=1.0)
        draws.append(tty.getvalue().count("\r") - before)
    assert draws == [1, 0, 1, 0, 1, 0, 1, 0, 1]  # first step, then every 2 s of the clock
    assert "9/10" in tty.getvalue() and "1.0 img/s" in tty.getvalue()


def test_tensorboard_receives_scalars_and_alpha_histograms(tmp_path, monkeypatch):
    import sys
    import types

    from dartsnas.train.search import SearchConfig, search

    calls = []

    class FakeWriter:
        def __init__(self, log_dir, purge_step):
            calls.append(("init", log_dir, purge_step))

        def add_scalar(self, key, value, step):
            calls.append(("scalar", key, step))

        def add_histogram(self, key, values, step):
            calls.append(("histogram", key, tuple(values.shape), step))

        def flush(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    search(SearchConfig(dataset="digits", init_channels=4, layers=3, batch_size=16, epochs=2, steps_per_epoch=1),
           tmp_path / "run", quiet=True, tensorboard=True)
    assert calls[0] == ("init", str(tmp_path / "run" / "tensorboard"), 1)
    assert ("scalar", "train_loss", 2) in calls and ("scalar", "val_acc", 1) in calls and ("scalar", "lr", 1) in calls
    assert ("histogram", "alpha/normal", (14, 8), 2) in calls and ("histogram", "alpha/reduce", (14, 8), 1) in calls


def test_tensorboard_missing_is_a_clear_error_before_anything_is_written(tmp_path, monkeypatch):
    import sys

    import pytest

    from dartsnas.errors import ConfigError
    from dartsnas.train.search import SearchConfig, search

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ConfigError, match="--tensorboard needs the tensorboard package"):
        search(SearchConfig(dataset="digits", epochs=1), tmp_path / "run", quiet=True, tensorboard=True)
    assert not (tmp_path / "run").exists()
