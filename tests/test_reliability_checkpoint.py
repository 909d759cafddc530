"""Checkpoint saves under faults: nothing a learner saved is ever lost.

Three kinds of evidence, each counting its outcomes:

* fault injection: every file-system call a save makes (os.mkdir/open/fsync/replace/unlink/rmdir,
  shutil.rmtree, safetensors' save_file, ``open``) is made to fail in turn, as an ``OSError`` (disk
  full), a ``KeyboardInterrupt`` (Ctrl-C: the clean-up handler runs) and a kill (no handler runs);
  after each, the checkpoint loads and equals the old or the new version, and a re-save works and
  leaves a tidy directory;
* the double fault: a kill at every step of one save, then a kill at every step of the next save
  started from that state; the checkpoint always loads as one of the saved versions;
* real ``SIGKILL``s at seeded random moments of a child process that saves in a loop.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import select
import shutil
import signal
import time

import pytest
import torch

import minillm.checkpoint as ckpt
from minillm.checkpoint import load_checkpoint, save_checkpoint
from minillm.models.bigram import BigramConfig, BigramLM

VOCAB = 32


def _model(version: int) -> BigramLM:
    m = BigramLM(BigramConfig(vocab_size=VOCAB))
    with torch.no_grad():
        m.table.weight.fill_(float(version))
    return m


def _version(path) -> int:
    """The saved version found at ``path``: weights and metadata must agree."""
    model = load_checkpoint(path)
    values = model.table.weight.unique()
    assert values.numel() == 1, "weights mix two versions"
    version = int(values.item())
    assert model.checkpoint_metadata == {"version": version}
    return version


def _save(path, version: int) -> None:
    save_checkpoint(_model(version), path, metadata={"version": version})


class Killed(BaseException):
    """The process dies here: nothing after this point runs, not even exception handlers."""


# (module, attribute) of every call through which a save touches the disk
_TARGETS = [(os, "mkdir"), (os, "open"), (os, "fsync"), (os, "replace"), (os, "rename"),
            (os, "unlink"), (os, "rmdir"), (shutil, "rmtree"), (ckpt, "save_file"), (ckpt, "open")]


@contextlib.contextmanager
def _faults(fail_at: int | None, make_error, log: list[str] | None = None):
    """Number every disk call; the ``fail_at``-th one (1-based) raises ``make_error()`` instead."""
    count = [0]
    saved = [(mod, name, getattr(mod, name, None)) for mod, name in _TARGETS]

    def wrap(name, real):
        def call(*args, **kwargs):
            count[0] += 1
            if log is not None:
                log.append(name)
            if count[0] == fail_at:
                raise make_error()
            return real(*args, **kwargs)
        return call

    try:
        for mod, name, real in saved:
            setattr(mod, name, wrap(name, real if real is not None else open))
        yield count
    finally:
        for mod, name, real in saved:
            if real is None:
                delattr(mod, name)
            else:
                setattr(mod, name, real)


def _calls_in_one_save(tmp_path, prepare) -> list[str]:
    path = tmp_path / "count" / "ck"
    prepare(path)
    log: list[str] = []
    with _faults(None, None, log):
        _save(path, 2)
    shutil.rmtree(tmp_path / "count")
    return log


MODES = {
    "OSError": (lambda: OSError(28, "No space left on device"), False),
    "KeyboardInterrupt": (lambda: KeyboardInterrupt(), False),
    "kill": (lambda: Killed(), True),
}


@contextlib.contextmanager
def _no_handler(active: bool):
    """A killed process runs no clean-up: replace the save's failure handler by nothing."""
    real = ckpt._abandon
    if active:
        ckpt._abandon = lambda *a, **k: None
    try:
        yield
    finally:
        ckpt._abandon = real


@pytest.fixture
def no_fsync(monkeypatch):
    """fsync only matters for power loss, which these tests cannot simulate (a killed process's
    writes survive in the page cache); the calls are still counted and faulted, just not slow."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def _prepare_existing(path):
    _save(path, 1)


def _prepare_fresh(path):
    path.parent.mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("start", ["existing", "fresh"])
def test_a_fault_at_every_step_of_a_save_loses_nothing(tmp_path, mode, start, no_fsync):
    prepare = _prepare_existing if start == "existing" else _prepare_fresh
    calls = _calls_in_one_save(tmp_path, prepare)
    assert {"save_file", "fsync", "replace"} <= set(calls) and len(calls) >= 10
    make_error, kill = MODES[mode]
    outcomes = collections.Counter()
    for k in range(1, len(calls) + 1):
        path = tmp_path / f"run{k}" / "ck"
        prepare(path)
        raised = False
        with _no_handler(kill):
            try:
                with _faults(k, make_error):
                    _save(path, 2)
            except (OSError, KeyboardInterrupt, Killed):
                raised = True
        try:
            found = _version(path)
        except FileNotFoundError:
            found = None
        # existing: the old (1) or the new (2) version; fresh: nothing yet, or the new version
        allowed = {1, 2} if start == "existing" else {None, 2}
        assert found in allowed, f"fault at call {k} ({calls[k - 1]}): found {found}, calls {calls}"
        outcomes[(calls[k - 1], "raised" if raised else "absorbed", found)] += 1
        _save(path, 3)  # the next save repairs whatever the fault left behind
        assert _version(path) == 3
        assert sorted(os.listdir(path.parent)) == ["ck"], f"fault at call {k}: leftovers"
    assert sum(outcomes.values()) == len(calls)
    found_counts = collections.Counter(found for (_, _, found) in outcomes.elements())
    print(f"\n[{start}/{mode}] {len(calls)} fault points, versions found after the fault: "
          f"{dict(found_counts)}, data loss: 0")


def _kill_points(tmp_path) -> list[str]:
    return _calls_in_one_save(tmp_path, _prepare_existing)


def test_double_fault_never_leaves_nothing_loadable(tmp_path, no_fsync):
    """A kill during save 2 at every step i, then a kill during save 3 at every step j."""
    n = len(_kill_points(tmp_path))
    outcomes = collections.Counter()
    root = tmp_path / "double"
    for i in range(1, n + 1):
        first = root / f"first{i}"
        _save(first / "ck", 1)
        with _no_handler(True):
            try:
                with _faults(i, Killed):
                    _save(first / "ck", 2)
            except Killed:
                pass
        # count the calls of the second save from this state, then kill it at each of them
        probe = root / "probe"
        shutil.copytree(first, probe)
        with _faults(None, None) as count:
            _save(probe / "ck", 3)
        second_calls = count[0]
        shutil.rmtree(probe)
        for j in range(1, second_calls + 1):
            run = root / f"run{i}_{j}"
            shutil.copytree(first, run, symlinks=True)
            with _no_handler(True):
                try:
                    with _faults(j, Killed):
                        _save(run / "ck", 3)
                except Killed:
                    pass
            found = _version(run / "ck")  # never FileNotFoundError: that would be data loss
            assert found in {1, 2, 3}
            outcomes[found] += 1
            _save(run / "ck", 4)
            assert _version(run / "ck") == 4 and sorted(os.listdir(run)) == ["ck"]
            shutil.rmtree(run)
        shutil.rmtree(first)
    assert sum(outcomes.values()) >= n * n // 2
    print(f"\n[double fault] {sum(outcomes.values())} kill pairs, versions found: {dict(outcomes)}, "
          "data loss: 0")


def test_the_reported_double_fault_is_recovered(tmp_path):
    """The exact case from issue 9: killed between the renames, then killed right after the re-save
    would have removed ``.previous``; a complete copy sits only in ``.saving-*`` directories."""
    path = tmp_path / "ck"
    _save(path, 1)
    real_replace = os.replace

    def die_before_new_copy_moves_in(src, dst):
        if ".saving-" in str(src) and not str(src).endswith(".tmp"):
            raise Killed()
        return real_replace(src, dst)

    with _no_handler(True):
        os.replace = die_before_new_copy_moves_in
        try:
            with pytest.raises(Killed):
                _save(path, 2)
        finally:
            os.replace = real_replace
    assert not path.exists() and (tmp_path / ".ck.previous").exists()
    # the old protocol removed .previous first; simulate that state too: only .saving-* survives
    ckpt._remove_dir(tmp_path / ".ck.previous")
    assert [p.name.startswith(".ck.saving-") for p in tmp_path.iterdir()] == [True]
    assert _version(path) == 2  # adopted from the complete .saving-* copy
    _save(path, 3)
    assert _version(path) == 3 and sorted(os.listdir(tmp_path)) == ["ck"]


def test_a_partial_saving_copy_is_never_adopted(tmp_path):
    path = tmp_path / "ck"
    _save(path, 1)
    shutil.copytree(path, tmp_path / ".ck.saving-deadbeef")
    weights = tmp_path / ".ck.saving-deadbeef" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # torn write
    shutil.rmtree(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(path)
    assert (tmp_path / ".ck.saving-deadbeef").exists()  # left as evidence, cleaned by the next save
    _save(path, 2)
    assert sorted(os.listdir(tmp_path)) == ["ck"]


# ---- real SIGKILLs ----------------------------------------------------------------------------------

def _saver_child(path, fd: int, first_version: int) -> None:
    """Forked child: save versions first_version, first_version + 1, ... forever, reporting each."""
    try:
        version = first_version
        while True:
            _save(path, version)
            os.write(fd, f"{version}\n".encode())
            version += 1
    finally:
        os._exit(1)


def _state(root) -> str:
    names = sorted(os.listdir(root))
    saving = sum(n.startswith(".ck.saving-") for n in names)
    return (("ck" if "ck" in names else "no ck") + (" + .previous" if ".ck.previous" in names else "")
            + (f" + {saving} .saving-*" if saving else ""))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_at_random_moments_of_saving_in_a_loop(tmp_path):
    rng = random.Random(20261201)
    root = tmp_path / "live"
    root.mkdir()
    path = root / "ck"
    states, found_rel = collections.Counter(), collections.Counter()
    next_version, kills, deadline = 1, 25, time.monotonic() + 120
    for _ in range(kills):
        assert time.monotonic() < deadline, "the SIGKILL test ran out of time"
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _saver_child(path, write_fd, next_version)
        os.close(write_fd)
        reported = b""
        ready, _, _ = select.select([read_fd], [], [], 60)
        assert ready, "the saving child reported nothing within 60 s"
        reported += os.read(read_fd, 4096)
        time.sleep(rng.uniform(0.0, 0.04))  # somewhere inside one of the following saves
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        while chunk := os.read(read_fd, 4096):
            reported += chunk
        os.close(read_fd)
        last_done = int(reported.split()[-1])
        states[_state(root)] += 1
        # load from a copy, so the next child saves over the state the kill left (no repair between)
        copy = tmp_path / "copy"
        shutil.copytree(root, copy, symlinks=True)
        found = _version(copy / "ck")
        shutil.rmtree(copy)
        # the last save reported done, or the one in flight if it completed before its report
        assert found in (last_done, last_done + 1), (found, last_done)
        found_rel["last reported" if found == last_done else "in flight, completed"] += 1
        next_version = last_done + 2
    assert sum(states.values()) == kills
    _save(path, next_version)
    assert sorted(os.listdir(root)) == ["ck"]
    print(f"\n[SIGKILL] {kills} kills; on-disk state at the kill: {dict(states)}; "
          f"version loaded: {dict(found_rel)}; data loss: 0")
