"""One progress display for long work (download bytes, training steps, feature-visualisation frames): tqdm.

On a terminal it is tqdm's self-overwriting line. Elsewhere (a CI log, ``docker logs``, a
file) there is nothing to overwrite, so it prints plain lines instead: one every
PLAIN_EVERY_S seconds while the work goes on, and one when it ends.
"""
import sys

from tqdm import tqdm

PLAIN_EVERY_S = 30.0


class Progress(tqdm):
    """tqdm, in plain lines where its stream is not a terminal. ``note()`` prints a line of its own."""

    def __init__(self, *args, file=None, **kwargs):
        file = file if file is not None else sys.stderr
        self.plain = not (hasattr(file, "isatty") and file.isatty())
        self.plain_shown = None  # the count the last plain line showed
        if self.plain:
            kwargs.update(leave=False, mininterval=PLAIN_EVERY_S, maxinterval=PLAIN_EVERY_S)
        super().__init__(*args, file=file, **kwargs)

    def display(self, msg=None, pos=None):
        if not self.plain:
            return super().display(msg, pos)
        if msg is None and self.n and self.n != self.plain_shown:
            self.plain_line()
        return False  # nothing on screen to clear

    def plain_line(self):
        self.plain_shown = self.n
        self.fp.write(str(self).rstrip() + "\n")
        self.fp.flush()

    def clear(self, nolock=False, pos=None):
        if not self.plain:
            super().clear(nolock)

    def close(self):
        if self.plain and not self.disable and self.n != self.plain_shown:
            self.plain_line()
        super().close()

    def abandon(self):
        """Close without the closing plain line: work stopped by a signal says so in one line of its own."""
        self.plain_shown = self.n
        self.close()

    def note(self, message):
        """``message`` on a line of its own, the progress line redrawn below it on a terminal."""
        self.write(message, file=self.fp)
