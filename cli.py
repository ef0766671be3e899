"""What every entry point shares: one-line errors and their exit statuses, argparse in that form, signals.

A failure we foresaw is one line in argparse's form (``prog: error: ...``): exit status 2
for bad input (UsageError), 1 for a failure on the way (Failure: a download, a full disk,
an unreadable checkpoint), 128 + the signal's number for a stop by SIGTERM, Ctrl-C or a
closed terminal (SIGHUP), and 141 (128 + SIGPIPE) for an output stream that broke mid-run.
"""
import argparse
import contextlib
import functools
import os
import shutil
import signal
import sys

EXIT_FAILURE = 1
EXIT_USAGE = 2


class OneLine(Exception):
    """An error whose message says it all: raised into a notebook's cell (by imFunctions' own calls, say), IPython
    shows the one line instead of a traceback."""

    def _render_traceback_(self):
        return [f"{type(self).__name__}: {' '.join(str(self).split())}"]


class UsageError(OneLine):
    """Bad input from the command line: one line, exit status 2."""


class Failure(OneLine):
    """A failure we foresaw, worded for the person running the script: one line, exit status 1."""


class OneLineParser(argparse.ArgumentParser):
    def __init__(self, *args, prog=None, **kwargs):
        # Named after the script that builds it, not sys.argv[0]: in a notebook that is ipykernel_launcher.py.
        prog = prog or os.path.basename(sys._getframe(1).f_globals.get("__file__") or sys.argv[0])
        super().__init__(*args, prog=prog, **kwargs)

    def error(self, message):
        if in_a_kernel():
            raise CellEnded(f"{self.prog}: error: {message}", EXIT_USAGE)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# --------------------------------------------------------------------------- in a notebook

def in_a_kernel():
    """Whether this runs in an IPython kernel (a notebook's), where an exit status means nothing and a SystemExit
    is a traceback and IPython's warning."""
    ipython = sys.modules.get("IPython")
    return ipython is not None and getattr(ipython, "get_ipython", lambda: None)() is not None


class CellEnded(Exception):
    """In a notebook, what a script's last line and exit status become: IPython shows what _render_traceback_
    gives instead of a traceback, so the cell ends with the one line, and Run All stops there as at any error."""

    def __init__(self, line, status):
        super().__init__(line)
        self.line, self.status = line, status

    def _render_traceback_(self):
        return [self.line]


_PROGRAM = []  # the running script's name, as its parser has it
_LAST_LINE = []  # in a kernel, the one line a script would have printed last, for CellEnded


def program():
    return _PROGRAM[-1] if _PROGRAM else os.path.basename(sys.argv[0])


def last_line(line):
    """A script's last line: printed, or in a kernel held for the cell's end (entry_point)."""
    if in_a_kernel():
        _LAST_LINE[:] = [line]
    else:
        print(line, file=sys.stderr)


def entry_point(main):
    """A script's ``main(argv)``: in a notebook, a non-zero exit status ends the cell in its one line (CellEnded),
    never a SystemExit; in a script, the status is returned."""
    @functools.wraps(main)
    def run(argv=None):
        _LAST_LINE.clear()
        status = main(argv)
        if status and in_a_kernel():
            if _LAST_LINE:
                raise CellEnded(_LAST_LINE.pop(), status)
            stop = f"stopped by {signal.Signals(status - 128).name}, " if status > 128 else ""
            raise CellEnded(f"{program()}: {stop}exit status {status}", status)
        return status
    return run


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default, except where there is none to show (its help says what happens)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def parse_checked(parser, validate_args, argv=None):
    """Parse, then validate: a UsageError becomes argparse's one-line error and exit status 2."""
    _PROGRAM[:] = [parser.prog]
    args = parser.parse_args(argv)
    try:
        validate_args(args)
    except UsageError as error:
        parser.error(str(error))
    return args


# The largest count a flag takes: TensorFlow holds counts (a Saver's max_to_keep, a shift) as 32-bit ints,
# and one past this would fail only after minutes of loading data.
MAX_COUNT = 2 ** 31 - 1


def flag(name):
    return f"--{name.replace('_', '-')}"


def require_at_least_one(args, names, most=MAX_COUNT):
    """Count flags: each at least 1 and at most ``most``, checked before anything is loaded."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"{flag(name)} must be at least 1, got {value}")
        require_at_most(args, name, most)


def require_at_most(args, name, most=MAX_COUNT):
    value = getattr(args, name)
    if value is not None and value > most:
        raise UsageError(f"{flag(name)} must be at most {most}, got {value}")


def shown(path):
    """A path fit for a one-line message: one holding a newline, a tab or another control character is shown
    quoted, its controls escaped, so the message stays one line."""
    text = str(path)
    return repr(text) if any(ord(character) < 32 or ord(character) == 127 for character in text) else text


def os_failure(error):
    """A foreseeable OSError (a folder that is missing or not ours to read, a full disk) as a Failure whose
    one line names the path."""
    import files  # here, not at the top: files imports this module
    path = error.filename if error.filename is not None else "a file"
    if files.is_disk_full(error):
        free = shutil.disk_usage(files.nearest_existing(os.path.dirname(os.path.abspath(path)))).free
        return files.DiskFull(f"disk full: cannot write {shown(path)}: {files.human_bytes(free)} free")
    why = (error.strerror or type(error).__name__).lower()
    return Failure(f"cannot use {shown(path)}: {why}")


def print_error(error):
    """The one line a user sees for a failure we foresaw, in argparse's form."""
    message = " ".join(str(error).split())
    last_line(f"{program()}: error: {message}")


def report(error):
    """Print a foreseen failure's one line; returns its exit status."""
    print_error(error)
    return EXIT_USAGE if isinstance(error, UsageError) else EXIT_FAILURE


# --------------------------------------------------------------------------- signals

class Stopped(Exception):
    """SIGTERM or SIGINT while nothing is in progress that could be saved."""

    def __init__(self, number):
        super().__init__(number)
        self.number = number
        self.name = signal.Signals(number).name

    @property
    def exit_status(self):
        return 128 + self.number


def report_stop(stop, doing=""):
    """The one line for a stop by a signal (what was being written is already removed); returns 128 + its number."""
    last_line(f"{program()}: stopped by {stop.name}{doing}")
    return stop.exit_status


def said_in_one_line(job, doing=""):
    """``(job()'s result, None)``, or ``(None, exit status)`` once its stop or foreseen failure is said in one
    line: a signal (``doing`` says what became of the file being written), bad input, a failure, or an OSError
    naming a path."""
    try:
        return job(), None
    except Stopped as stop:
        return None, report_stop(stop, doing)
    except (UsageError, Failure) as error:
        return None, report(error)
    except OSError as error:
        return None, report(os_failure(error))


def stop_at_once(number, frame):
    raise Stopped(number)


# What stops a run: docker stop, Ctrl-C, and the terminal closing (whose default would end the process unsaved).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def stop_on_signals():
    """The stop signals end the process at once, as Stopped. (As PID 1 in a container, python would
    otherwise ignore docker stop's SIGTERM.)"""
    for number in STOP_SIGNALS:
        signal.signal(number, stop_at_once)


class Interrupted:
    """Turns the stop signals into a flag that a loop checks when it can stop cleanly."""

    def __init__(self):
        self.signal = None
        for number in STOP_SIGNALS:
            signal.signal(number, self.catch)

    def catch(self, number, frame):
        self.signal = number


@contextlib.contextmanager
def signal_handlers_restored():
    """SIGTERM's and SIGINT's handlers as they were before the block, whatever it set. In a notebook, main()
    runs in a kernel that lives on: after the run, the kernel's Interrupt must raise KeyboardInterrupt again
    rather than be taken for a stop (Stopped, or Interrupted's flag that no loop checks any more)."""
    saved = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def take_as_a_stop(number):
    """A stop that came other than as a signal, taken as SIGTERM would be taken now (at once, or by the loop
    at its next step, which saves a checkpoint first), with ``number`` for its exit status. Outside a script's
    main, where nothing takes stops, nothing happens."""
    handler = signal.getsignal(signal.SIGTERM)
    if callable(handler):
        handler(number, None)


# --------------------------------------------------------------------------- output streams

class LosableStream:
    """A script's stdout or stderr, which may go away under it: a pipe whose reader left (``| head -3``), a log on
    a full disk (``>/dev/full``), a closed descriptor. Nothing is left to print a line on, so a stream that breaks
    after lines got through is a stop, taken as SIGTERM is (training saves a checkpoint), with SIGPIPE's number:
    exit status 141. One that never took a line loses its lines, not the run. Either way its descriptor is then
    pointed at /dev/null: what is still buffered, and TensorFlow's native writes, go nowhere instead of failing."""

    def __init__(self, stream):
        self.stream = stream
        self.pending = self.delivered = self.lost = False

    def write(self, text):
        if not self.lost:
            try:
                self.stream.write(text)
                self.pending = self.pending or bool(text)
                if self.stream.line_buffering and "\n" in text:
                    self.delivered = True
            except OSError:
                self.lose()
        return len(text)

    def flush(self):
        if not self.lost:
            try:
                self.stream.flush()
                self.delivered = self.delivered or self.pending
            except OSError:
                self.lose()

    def lose(self):
        self.lost = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.stream.fileno())
        os.close(devnull)
        if self.delivered:
            take_as_a_stop(signal.SIGPIPE)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def guard_streams():
    """stdout and stderr as LosableStreams: called by each script as it starts (not in a notebook's kernel)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, LosableStream):  # None: started with it closed
            setattr(sys, name, LosableStream(stream))
