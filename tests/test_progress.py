"""The one progress display (progress.py): tqdm's line on a terminal, plain lines in a log."""
import io

import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def count_to(stream, total, note_at=None):
    with progress.Progress(total=total, desc="Epoch 1", unit="step", file=stream) as bar:
        for done in range(1, total + 1):
            bar.update(1)
            if done == note_at:
                bar.note("a note")
    return stream.getvalue()


def test_in_a_log_it_prints_plain_lines_and_a_last_one_with_the_whole_count():
    written = count_to(io.StringIO(), 5)

    assert "\r" not in written
    assert written.endswith("\n") and "5/5" in written.splitlines()[-1]
    assert all(line.startswith("Epoch 1") for line in written.splitlines())


def test_in_a_log_a_short_job_prints_one_line_not_one_per_step():
    assert len(count_to(io.StringIO(), 50).splitlines()) == 1


def test_on_a_terminal_it_overwrites_its_line():
    written = count_to(Terminal(), 5)

    assert written.count("\r") >= 2 and "5/5" in written.rsplit("\r", 1)[-1]


def test_a_note_is_a_line_of_its_own_in_a_log():
    assert "a note" in count_to(io.StringIO(), 5, note_at=3).splitlines()
