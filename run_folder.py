"""A training run's folder: one run at a time, resumed from the checkpoints on disk, saved by the clock.

The checkpoint folder holds full checkpoints (``model.ckpt-<step>``, a tf.train.Saver's,
every --checkpoint-minutes of training, at the end and on SIGTERM or Ctrl-C), filter
snapshots (``snapshots/filters-<step>``, the conv layers alone, every --snapshot-every
steps, for filter_gif.py), and the run's description (``run.json``, ``mean_image.npy``).
The rules, for training, predict.py and filter_gif.py alike:

- The files are the truth. Checkpoints and snapshots are found from their index files
  (TensorFlow writes the index last); TensorFlow's ``checkpoint`` state file is a hint,
  rebuilt when it says otherwise.
- One rule for the run's identity: every full checkpoint records the run's settings (its
  network's description among them, architecture.py) and training mean inside it
  (``run/json``, ``run/mean_image``), and the newest readable
  checkpoint's record wins; run.json and mean_image.npy are its readable copies, used
  where no checkpoint records a run (before the first checkpoint, or one written by an
  earlier version).
- One run writes a folder at a time (an flock the kernel releases however it ends), and
  it starts by sweeping what killed runs left: temporary files, half-written checkpoints.

The training loop makes a few calls::

    with RunFolder(checkpoint_dir, logdir, data_dir) as folder:
        run = folder.start(classes, image_size, batch_size, seed)   # the run resumed, or a new one
        ...                                                           # build the graph, then in it:
        folder.attach(graph, run, mean_image, snapshot_variables, keep, minutes)
        restored, step = folder.resume(session)
        ... folder.save_snapshot(session, step)  folder.checkpoint_due()  folder.save_checkpoint(session, step)

This module knows nothing of the tutorial's graph: the variables are handed to it.
"""
import collections
import contextlib
import glob
import json
import os
import re
import shutil
import socket
import sys
import time

import numpy as np

import architecture
import cli
import files
import imFunctions as imf
import tf_start  # TensorFlow's start-up notes held back
import tensorflow as tf

v1 = tf.compat.v1

CHECKPOINT_NAME = "model.ckpt"
SNAPSHOT_DIR = "snapshots"
SNAPSHOT_NAME = "filters"
RUN_FILE = "run.json"
MEAN_FILE = "mean_image.npy"
STATE_FILE = "checkpoint"  # TensorFlow's list of the latest checkpoints: a hint, the files are the truth
LOCK_FILE = ".training.lock"
MAX_SEED = 2 ** 31 - 1
# A run's settings, kept inside each full checkpoint beside the weights they belong to.
RUN_KEYS = {"classes": list, "image_size": int, "batch_size": int, "train_images": int, "seed": int}
# The network's description, part of the run's identity too; a run of an earlier version recorded none and
# had the tutorial's (with_network).
NETWORK_KEY = "network"
RUN_JSON_VARIABLE = "run/json"
# What each training segment (one process's part of the run) computed in, from its first step, kept
# in each checkpoint and in run.json: not the run's identity, since a run may resume with or without
# --mixed-precision.
SEGMENTS_KEY = "segments"
SEGMENTS_VARIABLE = "run/segments"
RUN_MEAN_VARIABLE = "run/mean_image"
# What reading a damaged or half-written checkpoint raises (IndexError: a short data file).
UNREADABLE = (tf.errors.OpError, ValueError, IndexError, OSError)

RunRecord = collections.namedtuple("RunRecord", "run mean_image prefix")


class Diverged(cli.Failure):
    """The loss or the weights stopped being finite numbers: nothing after this is worth saving."""


# --------------------------------------------------------------------------- finding files

def step_files(folder, name):
    """``[(step, prefix)]`` of the ``<name>-<step>`` checkpoints in ``folder`` whose index is written, oldest
    first: the one scanner for full checkpoints and snapshots alike."""
    found = []
    try:
        entries = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):  # none yet; a folder we may not read is the caller's OSError
        entries = []
    for entry in entries:
        match = re.fullmatch(rf"{re.escape(name)}-(\d+)\.index", entry)
        if match:
            found.append((int(match.group(1)), os.path.join(folder, entry[:-len(".index")])))
    return sorted(found)


def find_checkpoints(checkpoint_dir):
    """``[(step, prefix)]`` of the full checkpoints on disk, newest first."""
    return step_files(checkpoint_dir, CHECKPOINT_NAME)[::-1]


def vanished(prefix):
    """Whether a checkpoint's files are gone: pruned (--keep-checkpoints) by the run saving into the folder."""
    return not (os.path.exists(f"{prefix}.index") and glob.glob(f"{glob.escape(prefix)}.data-*"))


# How often a reader lists a folder again when the checkpoint it listed was pruned before it could be read. A
# run prunes only after it has written the newer one, so one relist finds it; a run saving faster than a
# checkpoint reads could go on replacing them.
RELISTS = 10


def newest_readable(checkpoint_dir, read, checkpoints=None, warn=None):
    """``(step, prefix, read(prefix))`` of the newest full checkpoint that ``read`` reads (it returns None or
    raises one of UNREADABLE where it cannot), or None where none does. Every reader of a run's folder comes
    through here, for the run may be saving into it: a checkpoint that vanished between the listing and the
    reading was pruned after a newer one was written, and the folder is listed again. ``warn(prefix, why)`` is
    told of each one that is there but does not read."""
    checkpoints = find_checkpoints(checkpoint_dir) if checkpoints is None else checkpoints
    for _ in range(RELISTS):
        for step, prefix in checkpoints:
            try:
                value, why = read(prefix), "unreadable"
            except UNREADABLE as error:
                value, why = None, type(error).__name__
            if value is not None:
                return step, prefix, value
            if vanished(prefix):
                break
            if warn:
                warn(prefix, why)
        else:
            return None
        checkpoints = find_checkpoints(checkpoint_dir)
    raise cli.Failure(f"the checkpoints in {checkpoint_dir} were pruned {RELISTS} times in a row before they could "
                      f"be read (a run saving there every step?); try again")


def snapshot_dir(checkpoint_dir):
    return os.path.join(checkpoint_dir, SNAPSHOT_DIR)


def find_snapshots(checkpoint_dir):
    """``[(step, prefix)]`` of the filter snapshots on disk, oldest first."""
    return step_files(snapshot_dir(checkpoint_dir), SNAPSHOT_NAME)


def read_tensors(prefix, names):
    """``{name: array}`` of a checkpoint, or None while it is missing, damaged or half-written."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        return {name: reader.get_tensor(name) for name in names}
    except UNREADABLE:
        return None


def variable_names(prefix):
    """The set of variable names a checkpoint holds, or None while it is missing, damaged or half-written."""
    try:
        return set(tf.train.load_checkpoint(prefix).get_variable_to_shape_map())
    except UNREADABLE:
        return None


def remove_checkpoint(prefix):
    """A checkpoint's index and data files."""
    folder, name = os.path.split(prefix)
    for entry in os.listdir(folder):
        if entry.startswith(f"{name}.index") or entry.startswith(f"{name}.data-"):
            files.remove(os.path.join(folder, entry))


def is_leftover(name, names):
    """What a killed or failed save leaves: TensorFlow's temporaries, and data files whose index (written
    last) never came: a save cut short."""
    data = re.fullmatch(r"(.+)\.data-\d+-of-\d+", name)
    return ".tempstate" in name or re.fullmatch(rf"{STATE_FILE}\.tmp[0-9a-f]{{32}}", name) is not None \
        or (data is not None and f"{data.group(1)}.index" not in names)


def sweep_leftovers(folder):
    """Remove one folder's leftovers of failed saves and writes; returns ``(files removed, bytes freed)``."""
    names = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    return files.sweep_temporaries(folder, also=lambda name: is_leftover(name, names))


# --------------------------------------------------------------------------- the run's identity

def is_run(value):
    return isinstance(value, dict) and all(isinstance(value.get(key), kind) and not isinstance(value.get(key), bool)
                                           for key, kind in RUN_KEYS.items()) and network_problem(value) is None


def network_problem(run):
    """What is wrong with a run's recorded network, or None (none recorded is the tutorial's)."""
    try:
        architecture.of_run(run)
    except ValueError as error:
        return str(error)
    return None


def with_network(run):
    """A run's settings with its network's description: the one it recorded, else the tutorial's."""
    return {**run, NETWORK_KEY: run.get(NETWORK_KEY, architecture.TUTORIAL.record())}


def read_run_file(checkpoint_dir):
    """``(run.json as a dict, None)``, or ``(None, what is wrong with it)``."""
    path = os.path.join(checkpoint_dir, RUN_FILE)
    if not os.path.exists(path):
        return None, "missing"
    value = files.read_json(path)
    if value is None:
        return None, "not JSON"
    if not is_run(value):
        return None, network_problem(value) or f"not a run description (it needs {', '.join(RUN_KEYS)})"
    return with_network({key: value[key] for key in (*RUN_KEYS, NETWORK_KEY) if key in value}), None


def read_mean_file(checkpoint_dir, image_size):
    """``(mean_image.npy, None)``, or ``(None, what is wrong with it)``."""
    path = os.path.join(checkpoint_dir, MEAN_FILE)
    if not os.path.exists(path):
        return None, "missing"
    try:
        mean_image = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None, "not a numpy array"
    if mean_image.shape != architecture.Network.input_shape(image_size) or not np.isfinite(mean_image).all():
        return None, f"not a {image_size}x{image_size} RGB mean image (shape {mean_image.shape})"
    return mean_image.astype(np.float32), None


def newest_record(checkpoint_dir, checkpoints=None):
    """The RunRecord of the newest readable checkpoint that records its run, or None."""
    def record(prefix):
        tensors = read_tensors(prefix, [RUN_JSON_VARIABLE, RUN_MEAN_VARIABLE])
        if tensors is None:  # unreadable, or written before checkpoints recorded their run
            return None
        run = json.loads(tensors[RUN_JSON_VARIABLE].decode())
        return RunRecord(with_network(run), tensors[RUN_MEAN_VARIABLE], prefix) if is_run(run) else None

    found = newest_readable(checkpoint_dir, record, checkpoints)
    return found[2] if found else None


def load_run(checkpoint_dir, checkpoints=None):
    """``(run, mean_image)`` of a checkpoint folder, by the one rule: the newest readable checkpoint's record,
    else run.json and mean_image.npy. A run.json that differs from the record is one warning.

    Raises UsageError, naming the file, when neither can be had.
    """
    record = newest_record(checkpoint_dir, checkpoints)
    run, run_problem = read_run_file(checkpoint_dir)
    if record is not None:
        if run != record.run:
            why = run_problem or "not what the checkpoints record"
            print(f"Warning: {os.path.join(checkpoint_dir, RUN_FILE)} is {why}: using the run "
                  f"{os.path.basename(record.prefix)} records (seed {record.run['seed']})", file=sys.stderr)
        return record.run, record.mean_image
    mean_image, mean_problem = read_mean_file(checkpoint_dir, run["image_size"]) if run else (None, None)
    if run is None or mean_image is None:
        name, problem = (RUN_FILE, run_problem) if run is None else (MEAN_FILE, mean_problem)
        raise cli.UsageError(f"{os.path.join(checkpoint_dir, name)} is {problem}, and no checkpoint in "
                             f"{checkpoint_dir} records it: not a training checkpoint folder?")
    return run, mean_image


def as_segments(value):
    """``[{"from_step": N, setting: value, ...}, ...]`` from a JSON value, or None where it is not one."""
    if not isinstance(value, list):
        return None
    return [segment for segment in value if isinstance(segment, dict) and isinstance(segment.get("from_step"), int)]


def read_segments(checkpoint_dir):
    """run.json's segments ([] where it has none)."""
    value = files.read_json(os.path.join(checkpoint_dir, RUN_FILE))
    return as_segments(value.get(SEGMENTS_KEY) if isinstance(value, dict) else None) or []


def add_segment(segments, step, settings):
    """The segments up to a run resumed at ``step`` with ``settings``: those begun before it (one begun later, or
    at it, saved nothing that this run continues), then this one unless the last already used these settings."""
    kept = [segment for segment in segments if segment["from_step"] < step]
    if not kept or {key: value for key, value in kept[-1].items() if key != "from_step"} != settings:
        kept.append({"from_step": step, **settings})
    return kept


def write_run(checkpoint_dir, run, mean_image, segments=()):
    """run.json (the run and its ``segments``) and mean_image.npy, what inference reads beside the
    checkpoints; rewritten only when they differ, each under a temporary name and renamed."""
    os.makedirs(checkpoint_dir, exist_ok=True)
    described = {**run, SEGMENTS_KEY: list(segments)} if segments else run
    if files.read_json(os.path.join(checkpoint_dir, RUN_FILE)) != described:
        files.write_json_atomically(os.path.join(checkpoint_dir, RUN_FILE), described)
    recorded_mean, _ = read_mean_file(checkpoint_dir, run["image_size"])
    if recorded_mean is None or not np.array_equal(recorded_mean, mean_image):
        files.write_npy_atomically(os.path.join(checkpoint_dir, MEAN_FILE), mean_image)


# --------------------------------------------------------------------------- restoring

def restore_latest(session, saver, checkpoint_dir, checkpoints=None, optional=()):
    """Restore the newest readable full checkpoint; returns its path, or None if there is none.

    Checkpoints are found from their files (the state file is only a hint); an
    unreadable one falls back to the one before, with a warning, and one pruned by a run
    saving into the folder since it was listed makes the folder listed again
    (newest_readable). One whose shapes do not fit this graph belongs to another run's
    settings: a UsageError. Variables named in ``optional`` keep their initial values
    where a checkpoint lacks them.
    """
    checkpoints = find_checkpoints(checkpoint_dir) if checkpoints is None else checkpoints
    # Earlier runs' checkpoints count towards --keep-checkpoints, so they get deleted in turn.
    saver.recover_last_checkpoints([prefix for _, prefix in reversed(checkpoints)])
    graph_variables = {variable.op.name: variable
                       for variable in session.graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)}

    def restore(prefix):
        shapes = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
        check_shapes(prefix, shapes, graph_variables, optional)
        # Checkpoints of earlier versions lack the run's variables: restore what they have. (In its
        # graph: outside it a Saver would try to restore eagerly, which TF1 variables cannot.)
        with session.graph.as_default():
            v1.train.Saver({name: variable for name, variable in graph_variables.items() if name in shapes},
                           name="restore").restore(session, prefix)
        return prefix

    def warn(prefix, why):
        print(f"Warning: checkpoint {prefix} is unreadable ({why}); trying the one before", file=sys.stderr)

    found = newest_readable(checkpoint_dir, restore, checkpoints, warn)
    if found:
        return found[1]
    if find_checkpoints(checkpoint_dir):  # there, and none reads: not a run's saves going on
        raise cli.Failure(f"no readable checkpoint in {checkpoint_dir}; move it aside to start afresh")
    return None


def check_shapes(prefix, shapes, graph_variables, optional=()):
    for name, variable in graph_variables.items():
        if name.startswith("run/") or (name in optional and name not in shapes):
            continue
        if name not in shapes:
            raise cli.UsageError(f"checkpoint {prefix} lacks {name}: it is not this tutorial's graph; "
                                 f"use another --checkpoint-dir")
        if shapes[name] != variable.shape.as_list():
            raise cli.UsageError(f"checkpoint {prefix} holds {name} of shape {shapes[name]}, but this run's graph "
                                 f"needs {variable.shape.as_list()}: it was trained with other settings (its run.json "
                                 f"says which); use them or another --checkpoint-dir")


def sync_state_file(checkpoint_dir, checkpoints):
    """Rewrite TensorFlow's state file from the checkpoints on disk when it is missing or says otherwise."""
    path = os.path.join(checkpoint_dir, STATE_FILE)
    names = [os.path.basename(prefix) for _, prefix in reversed(checkpoints)]
    try:
        state = tf.train.get_checkpoint_state(checkpoint_dir)
        hinted = (os.path.basename(state.model_checkpoint_path),
                  [os.path.basename(p) for p in state.all_model_checkpoint_paths]) if state else None
    except Exception:  # noqa: BLE001 -- a garbled text proto raises parse errors of several kinds
        hinted = "garbled"
    if not names or hinted == (names[-1], names):
        return
    if hinted is None:
        why = "missing"
    elif hinted == "garbled":
        why = "garbled"
    else:
        why = f"naming {hinted[0]} and {len(hinted[1])} checkpoint(s) of the {len(names)} on disk"
    print(f"Warning: {path} was {why}; rebuilt it from the checkpoints on disk, newest {names[-1]} (to go back "
          f"to an earlier checkpoint, move the later ones aside)", file=sys.stderr)
    lines = [f'model_checkpoint_path: "{names[-1]}"'] + [f'all_model_checkpoint_paths: "{name}"' for name in names]
    files.write_bytes_atomically(path, ("\n".join(lines) + "\n").encode())


def drop_snapshots_after(checkpoint_dir, step):
    """Filter snapshots past the restored step belong to steps being trained again; they would mix two
    timelines in the GIFs, so they go (retaken as training passes those steps)."""
    later = [prefix for snapshot_step, prefix in find_snapshots(checkpoint_dir) if snapshot_step > step]
    for prefix in later:
        remove_checkpoint(prefix)
    if later:
        print(f"Removed {len(later)} filter snapshot(s) after step {step}, taken after the last checkpoint of "
              f"the interrupted run; they are retaken as training repeats those steps")


@contextlib.contextmanager
def saving(what, folder, needed_bytes):
    """A Saver's failure as one line: a full disk names the folder and the size, its half-written file removed.
    TensorFlow's C++ log of the failure is held back: the one line replaces it, never follows it."""
    with tf_start.native_stderr_held_back(replaced_by=cli.Failure) as held, \
            _saver_failure_as_one_line(what, folder, needed_bytes):
        yield
    tf_start.pass_on(held[0])  # what a save that worked logged


@contextlib.contextmanager
def _saver_failure_as_one_line(what, folder, needed_bytes):
    try:
        yield
    except tf.errors.OpError as error:
        sweep_leftovers(folder)  # a half-written checkpoint (1.2 GB at 224 px) would keep the disk full
        if "No space left on device" in error.message or "Disk quota exceeded" in error.message:
            raise files.disk_full(folder, needed_bytes, what) from None
        raise cli.Failure(f"cannot save {what} in {folder}: {error.message.splitlines()[0]}") from None


def add_summary(writer, summary, step):
    """``writer.add_summary`` that never loses events in silence: a --logdir without room for this one is
    DiskFull, one line naming the folder (TensorFlow's writer would drop them and exit 0)."""
    logdir = writer.get_logdir()
    needed = len(summary if isinstance(summary, bytes) else summary.SerializeToString()) + 16  # TFRecord framing
    if shutil.disk_usage(logdir).free < needed:
        raise files.disk_full(logdir, needed, "TensorBoard's events")
    try:
        writer.add_summary(summary, step)
    except RuntimeError as error:  # the writer's thread died on a failed write: its error comes back here
        if "No space left on device" in str(error) or "quota exceeded" in str(error):
            raise files.disk_full(logdir, needed, "TensorBoard's events") from None
        raise cli.Failure(f"cannot write TensorBoard's events in {logdir}: {str(error).splitlines()[0]}") from None


def variable_bytes(variables):
    return sum(variable.shape.num_elements() * variable.dtype.size for variable in variables)


# --------------------------------------------------------------------------- the folder

class RunFolder:
    """The checkpoint and log folders of one training run, held by this process while it trains."""

    def __init__(self, checkpoint_dir, logdir, data_dir):
        self.checkpoint_dir, self.logdir, self.data_dir = checkpoint_dir, logdir, data_dir
        self.handles = []
        self.checkpoints = []
        self.previous = None
        self.saved_step = self.saved_path = None

    # ----------------------------------------------------------------- before the graph

    def __enter__(self):
        """Lock both folders (flock: the kernel releases it however the process ends, kill -9 included, so a
        stale lock never blocks the next run), then sweep what killed runs left."""
        try:
            for folder in (self.checkpoint_dir, self.logdir):
                self.lock(folder)
        except BaseException:
            self.__exit__()
            raise
        self.clean_leftovers()
        self.checkpoints = find_checkpoints(self.checkpoint_dir)
        return self

    def lock(self, folder):
        os.makedirs(folder, exist_ok=True)
        handle = open(os.path.join(folder, LOCK_FILE), "a+")
        self.handles.append(handle)
        if not files.try_lock(handle):
            handle.seek(0)
            raise cli.UsageError(f"{folder} is in use by another training run ({describe_holder(handle.read())}): "
                                 f"wait for it or stop it, or use another --checkpoint-dir and --logdir")
        handle.truncate(0)
        handle.write(f"{os.getpid()} {socket.gethostname()}\n")  # names the holder for the message above
        handle.flush()

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.close()  # closing the file releases its lock
        self.handles = []

    def clean_leftovers(self):
        """Remove what killed or failed runs left behind. Called with the run's lock held, so none is in use:
        TensorFlow's half-written checkpoint files (up to 1.2 GB each) and data files whose index was never
        written, its state file's temporaries, our own temporary files, and dataset caches whose writer is
        gone."""
        removed, freed = 0, 0
        for folder in (self.checkpoint_dir, snapshot_dir(self.checkpoint_dir)):
            count, size = sweep_leftovers(folder)
            removed, freed = removed + count, freed + size
        caches = imf.clean_cache_leftovers(self.data_dir)
        if removed or caches:
            print(f"Removed what an interrupted run left: {removed} temporary file(s) ({files.human_bytes(freed)}) "
                  f"and {caches} half-written dataset cache(s)")

    def start(self, classes, image_size, batch_size, seed=None, network=None):
        """The run this folder continues, or a new one: ``{classes, image_size, batch_size, seed, network}``.

        The seed is the one given, else the resumed run's, else a new random one; the network (an
        architecture.Network) likewise, else the tutorial's. A resumed run must be the same run (the
        seed and batch size fix the data order, the rest the graph): settings that differ are a
        UsageError, before the data is loaded.
        """
        self.previous = self.recorded_run()
        if seed is None:
            seed = (self.previous or {}).get("seed")
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0] & MAX_SEED)
        network = network or architecture.of_run(self.previous or {})
        run = {"classes": classes, "image_size": image_size, "batch_size": batch_size, "seed": seed,
               NETWORK_KEY: network.record()}
        self.check_same_run(run)
        return run

    def recorded_run(self):
        """The run this folder holds by the one rule (load_run's), or None for a new folder.

        Here run.json is rewritten to match the record (write_run, once restored), and checkpoints
        that record nothing (written by an earlier version) need run.json, or the folder is refused:
        never a new random seed in silence.
        """
        path = os.path.join(self.checkpoint_dir, RUN_FILE)
        from_file, problem = read_run_file(self.checkpoint_dir)
        record = newest_record(self.checkpoint_dir, self.checkpoints)
        if record and record.run != from_file:
            print(f"Warning: {path} is {problem or 'not what the checkpoints record'}: continuing the run "
                  f"{os.path.basename(record.prefix)} records (seed {record.run['seed']}) and rewriting it",
                  file=sys.stderr)
            return record.run
        if from_file is None and self.checkpoints:
            raise cli.UsageError(f"{self.checkpoint_dir} holds checkpoints, but {path} is {problem} and they do not "
                                 f"record their run's settings: put its run.json back, or use another --checkpoint-dir")
        if from_file is None and problem != "missing":
            print(f"Warning: ignoring {path} ({problem}): there is no checkpoint to continue", file=sys.stderr)
        return from_file

    def check_same_run(self, run):
        if not (self.previous and self.checkpoints):
            return
        for key in RUN_KEYS:
            if key in run and self.previous[key] != run[key]:
                raise cli.UsageError(f"{self.checkpoint_dir} holds a run with {key} {self.previous[key]}, not "
                                     f"{run[key]}: use the same settings or another --checkpoint-dir")
        held, asked = architecture.of_run(self.previous), architecture.of_run(run)
        if held != asked:
            what = f"the {held.name} network, not the {asked.name} one" if held.name != asked.name else \
                f"another description of the {held.name} network than the one given"
            raise cli.UsageError(f"{self.checkpoint_dir} holds a run of {what}: its checkpoints cannot restore into "
                                 f"it; use another --checkpoint-dir")

    # ----------------------------------------------------------------- with the graph

    def attach(self, graph, run, mean_image, snapshot_variables, keep_checkpoints, checkpoint_minutes,
               segment=None, optional_variables=(), first_snapshot_variables=None):
        """Add the savers to ``graph`` (call it inside ``graph.as_default()``): full checkpoints of every
        variable, the run's description among them, and snapshots of ``snapshot_variables``.

        ``segment``: the settings of this process's part of the run that may differ between parts (its
        precision), recorded in run.json from the step it resumes at. ``optional_variables``: state a
        checkpoint of another segment may lack (a loss scale, a layer's Adam moments), started afresh then.
        ``first_snapshot_variables``: what the run's first snapshot holds, where it is more than the later ones
        (a pretrained network's frozen layers).
        """
        self.check_same_run(run)
        self.run, self.mean_image = run, mean_image
        self.segment = segment or {}
        self.optional = {variable.op.name for variable in optional_variables}
        with tf.device("/cpu:0"):  # a string variable has no GPU kernel
            v1.Variable(json.dumps(run, sort_keys=True), trainable=False, name=RUN_JSON_VARIABLE)
            v1.Variable(mean_image, trainable=False, name=RUN_MEAN_VARIABLE)
            # Set once restored, from the checkpoint's own value: every checkpoint holds the run's history.
            self.segments_variable = v1.Variable("", trainable=False, name=SEGMENTS_VARIABLE)
            self.segments_json = v1.placeholder(tf.string, [], name="segments_json")
            self.set_segments = self.segments_variable.assign(self.segments_json, read_value=False)
        # Relative paths in the state file keep the folder valid when moved or mounted elsewhere.
        self.saver = v1.train.Saver(max_to_keep=keep_checkpoints, save_relative_paths=True, name="full_saver")
        self.snapshot_saver = v1.train.Saver(snapshot_variables, max_to_keep=None, name="snapshot_saver")
        self.first_snapshot_saver = self.snapshot_saver if first_snapshot_variables is None else \
            v1.train.Saver(first_snapshot_variables, max_to_keep=None, name="first_snapshot_saver")
        with tf.name_scope("finite_check"):
            trainable = graph.get_collection(v1.GraphKeys.TRAINABLE_VARIABLES)
            self.all_finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in trainable])
        self.checkpoint_bytes = variable_bytes(graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES))
        self.snapshot_bytes = variable_bytes(snapshot_variables)
        self.first_snapshot_bytes = variable_bytes(first_snapshot_variables or snapshot_variables)
        self.minutes = checkpoint_minutes

    def resume(self, session):
        """Restore the newest readable checkpoint into ``session`` (its variables initialised); returns
        ``(its path or None, the global step)``. Then the folder matches the run: run.json and the mean image
        written, snapshots past the step dropped, the state file rebuilt where it says otherwise."""
        restored = restore_latest(session, self.saver, self.checkpoint_dir, self.checkpoints, self.optional)
        step = int(session.run(v1.train.get_global_step(session.graph)))
        # The run's description is written only now that the graph is built and any restore worked.
        segments = add_segment(self.recorded_segments(session), step, self.segment) if self.segment else []
        session.run(self.set_segments, {self.segments_json: json.dumps(segments)})
        write_run(self.checkpoint_dir, self.run, self.mean_image, segments)
        drop_snapshots_after(self.checkpoint_dir, step)
        if restored:
            sync_state_file(self.checkpoint_dir, self.checkpoints)
            self.saved_step, self.saved_path = step, restored
        self.last_save = time.monotonic()
        return restored, step

    def recorded_segments(self, session):
        """The restored checkpoint's segments, else run.json's (a checkpoint of an earlier version has none)."""
        try:
            recorded = as_segments(json.loads(session.run(self.segments_variable).decode() or "null"))
        except ValueError:
            recorded = None
        return read_segments(self.checkpoint_dir) if recorded is None else recorded

    def check_finite(self, session, step):
        if not session.run(self.all_finite):
            raise Diverged(f"the weights are no longer finite numbers at global step {step}")

    def checkpoint_due(self):
        """True once --checkpoint-minutes of training have passed since the last full checkpoint."""
        return self.minutes > 0 and time.monotonic() - self.last_save >= 60 * self.minutes

    def save_checkpoint(self, session, step):
        """Write ``model.ckpt-<step>`` (never of non-finite weights); a full disk is one line naming the folder
        and the size needed."""
        if step == self.saved_step:
            return
        self.check_finite(session, step)
        with saving("a checkpoint", self.checkpoint_dir, self.checkpoint_bytes):
            path = self.saver.save(session, os.path.join(self.checkpoint_dir, CHECKPOINT_NAME), global_step=step,
                                   write_meta_graph=False)
        self.saved_step, self.saved_path, self.last_save = step, path, time.monotonic()
        print(f"Saved checkpoint {path}", flush=True)

    def save_snapshot(self, session, step, first=False):
        """Write ``snapshots/filters-<step>``, the conv layers alone (the run's ``first`` with every one), for
        filter_gif.py."""
        self.check_finite(session, step)  # a snapshot of NaN weights would blank every GIF frame
        folder = snapshot_dir(self.checkpoint_dir)
        with saving("a filter snapshot", folder, self.first_snapshot_bytes if first else self.snapshot_bytes):
            (self.first_snapshot_saver if first else self.snapshot_saver).save(session, os.path.join(folder, SNAPSHOT_NAME), global_step=step,
                                     write_meta_graph=False, write_state=False)

    def last_saved(self):
        if self.saved_path is None:
            return "no checkpoint was saved"
        return f"the last checkpoint, {self.saved_path}, holds the weights from before"


def describe_holder(text):
    pid, _, host = text.strip().partition(" ")
    if not pid.isdigit():
        return "its PID unknown"
    return f"PID {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")
