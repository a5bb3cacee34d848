"""The `excamera` command as a process: signals, stdout that goes away, and outputs that would
replace an input. Real subprocesses, real worker pools; every failure is one line on stderr.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from procfs import alive, descendants

from shared.codec.image import Image
from shared.codec.y4m import Y4mWriter
from shared.pipeline import runner

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "bigbuckbunny-720p.mp4"  # long enough (about 10 s) to interrupt
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "shared.cli", *map(str, args)]


def _run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(_command(*args), capture_output=True, text=True, env=ENV, cwd=REPO,
                          timeout=300, **kwargs)


def _small_y4m(path: Path, count: int = 3, width: int = 32, height: int = 32) -> Path:
    rng = np.random.default_rng(1)
    with Y4mWriter(path, width, height, fps=(24, 1)) as writer:
        for _ in range(count):
            planes = [rng.integers(0, 256, (h, w), dtype=np.uint8)
                      for w, h in ((width, height), (width // 2, height // 2),
                                   (width // 2, height // 2))]
            writer.write(Image(*planes))
    return path


def _one_line(stderr: str, *needles: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if ": note: " not in line]
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], stderr


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT to the process group"])
def test_a_stopped_encode_cleans_up_in_one_line(tmp_path: Path, how: str) -> None:
    """SIGTERM (a service manager, `timeout`) is handled like Ctrl-C: the pools stop, no worker
    outlives the command, the temporary work directory is removed, and no output is written;
    Ctrl-C, which reaches every worker too, prints one line, not a traceback per worker."""
    work_root = tmp_path / "tmp"
    work_root.mkdir()
    output = tmp_path / "out.webm"
    process = subprocess.Popen(_command("encode", SAMPLE, "-o", output, "--workers", "2"),
                               env={**ENV, "TMPDIR": str(work_root)}, cwd=REPO,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while len(descendants(process.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)   # until the forkserver and both workers run
    time.sleep(1.0)
    workers = descendants(process.pid)
    assert len(workers) >= 3 and process.poll() is None, "the encode did not start its pool"
    if how == "SIGTERM":
        process.send_signal(signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    expected = ("terminated", 143) if how == "SIGTERM" else ("interrupted", 130)
    assert process.returncode == expected[1], stderr
    _one_line(stderr, f"excamera encode: {expected[0]}")
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers), "a worker outlived the command"
    assert list(work_root.iterdir()) == []
    assert not output.exists()


def test_workers_end_with_a_killed_command(tmp_path: Path) -> None:
    """SIGKILL leaves the command no chance to stop its pools: each worker watches it (a pidfd)
    and ends within its grace, instead of waiting under the forkserver for tasks forever. Only
    the command's own work directory stays, as after any SIGKILL."""
    work_root = tmp_path / "tmp"
    work_root.mkdir()
    process = subprocess.Popen(_command("encode", SAMPLE, "-o", tmp_path / "out.webm",
                                        "--workers", "2"),
                               env={**ENV, "TMPDIR": str(work_root)}, cwd=REPO,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while len(descendants(process.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    left = descendants(process.pid)
    assert len(left) >= 3 and process.poll() is None, "the encode did not start its pool"
    process.kill()
    process.wait(timeout=10)
    deadline = time.monotonic() + runner.ORPHAN_GRACE_SECONDS + 15
    while any(alive(pid) for pid in left) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in left), "a worker outlived the killed command"
    assert not list(work_root.glob("excamera-vpxenc-*")), "a task's temporary files stayed"


# A pool whose workers are interrupted half-way through their initializer, as Ctrl-C to the
# process group can catch a worker the pool has just started.
_INTERRUPTED_SETUP = """
import multiprocessing, os, signal, sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from shared.pipeline import runner

watch = runner.exit_with
def interrupted_watch(parent):
    os.kill(os.getpid(), signal.SIGINT)
    watch(parent)
runner.exit_with = interrupted_watch  # the fork context carries the patch into the worker
pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                           initializer=runner.worker_setup, initargs=(os.getpid(),))
try:
    pool.submit(abs, -1).result(timeout=60)
except BrokenProcessPool:
    print("broken", [p.exitcode for p in pool._processes.values()] or "gone")
"""


def test_a_worker_interrupted_in_its_setup_ends_quietly() -> None:
    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_SETUP], capture_output=True,
                          text=True, env=ENV, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("broken"), done.stdout
    assert "Traceback" not in done.stderr and "initializer" not in done.stderr, done.stderr


# A worker whose task a signal ends (Ctrl-C reaches every process of the command) while the
# pool has the next task queued for it: the pool catches the task's exit and would run that
# task too, past the grace whose hard exit would then leave its temporary files behind.
_SIGNALLED_TASK = """
import multiprocessing, os, signal, sys, time
from concurrent.futures import ProcessPoolExecutor
from shared.pipeline import runner

def signalled():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)

def next_task(marker):
    open(marker, "w").close()

pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                           initializer=runner.worker_setup, initargs=(os.getpid(),))
pool.submit(abs, -1).result(timeout=60)  # the worker is set up
first = pool.submit(runner._run_task, ("phase1", 0), signalled, (), None)
second = pool.submit(runner._run_task, ("phase1", 1), next_task, (sys.argv[1],), None)
for future in (first, second):
    try:
        future.result(timeout=60)
    except BaseException as exc:
        print(type(exc).__name__)
"""


def test_a_signalled_worker_takes_no_further_task(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    done = subprocess.run([sys.executable, "-c", _SIGNALLED_TASK, str(marker)],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["SystemExit", "BrokenProcessPool"], done.stdout
    assert not marker.exists(), "the signalled worker ran the next task"


def test_stdout_that_goes_away_or_fills(tmp_path: Path) -> None:
    source = _small_y4m(tmp_path / "in.y4m")
    # A reader that left (`| head`): no traceback, and the output is there.
    reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)
    reader.wait()
    completed = subprocess.run(_command("encode", source, "-o", tmp_path / "a.ivf"),
                               stdout=reader.stdin, stderr=subprocess.PIPE, text=True, env=ENV,
                               cwd=REPO, timeout=300)
    reader.stdin.close()
    assert "Traceback" not in completed.stderr, completed.stderr
    assert (tmp_path / "a.ivf").stat().st_size > 0
    # decode -o - into a reader that left: quietly too (it said 'frame 1: Broken pipe').
    reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)
    reader.wait()
    completed = subprocess.run(_command("decode", tmp_path / "a.ivf", "-o", "-"),
                               stdout=reader.stdin, stderr=subprocess.PIPE, text=True, env=ENV,
                               cwd=REPO, timeout=300)
    reader.stdin.close()
    assert completed.returncode == 1 and completed.stderr == "", completed.stderr
    # A full disk behind stdout: one line naming stdout.
    with open("/dev/full", "w") as full:
        completed = subprocess.run(_command("encode", source, "-o", tmp_path / "b.ivf"),
                                   stdout=full, stderr=subprocess.PIPE, text=True, env=ENV,
                                   cwd=REPO, timeout=300)
    assert completed.returncode == 1
    _one_line(completed.stderr, "excamera encode: stdout: No space left on device")


def test_outputs_never_replace_inputs(tmp_path: Path) -> None:
    source = _small_y4m(tmp_path / "in.y4m")
    stream, state = tmp_path / "in.ivf", tmp_path / "in.state"
    done = _run("encode-frames", source, "-o", stream, "--state-out", state)
    assert done.returncode == 0, done.stderr
    originals = {path: path.read_bytes() for path in (source, stream, state)}
    (tmp_path / "link.ivf").symlink_to(stream)
    cases = [
        ("decode", stream, "-o", stream),
        ("decode", stream, "-o", tmp_path / "link.ivf"),
        ("decode", stream, "-o", tmp_path / "x.yuv", "--state-out", tmp_path / "x.yuv"),
        ("decode", stream, "-o", tmp_path / "w.yuv", "--state-in", state, "--state-out",
         stream),
        ("encode", source, "-o", source),
        ("encode", stream, "-o", tmp_path / "link.ivf"),
        ("encode-frames", source, "-o", source),
        ("encode-frames", source, "-o", tmp_path / "z.ivf", "--state-out", source),
        ("rebase", stream, "--source", source, "--state-in", state, "-o", stream),
        ("rebase", stream, "--source", source, "--state-in", state, "-o", tmp_path / "r.ivf",
         "--state-out", stream),
    ]
    for case in cases:
        completed = _run(*case)
        assert completed.returncode == 1, (case, completed.stderr)
        _one_line(completed.stderr, "would replace", "choose another path")
    for path, data in originals.items():
        assert path.read_bytes() == data, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ivf", "in.state", "in.y4m",
                                                          "link.ivf"]
    # --state-out may update --state-in in place: replaced only when the command succeeds.
    completed = _run("decode", stream, "-o", tmp_path / "y.yuv", "--frames", "0:1",
                     "--state-out", state)
    assert completed.returncode == 0, completed.stderr
    completed = _run("decode", stream, "-o", tmp_path / "y.yuv", "--frames", "1:",
                     "--state-in", state, "--state-out", state)
    assert completed.returncode == 0, completed.stderr
    assert state.read_bytes() == originals[state]  # the same final state as one decode


def test_failed_stream_leaves_no_state(tmp_path: Path) -> None:
    source = _small_y4m(tmp_path / "in.y4m")
    completed = _run("encode-frames", source, "-o", tmp_path / "missing" / "x.ivf",
                     "--state-out", tmp_path / "x.state")
    assert completed.returncode == 1
    _one_line(completed.stderr, "No such file or directory")
    assert not (tmp_path / "x.state").exists()


def test_frame_rate_terms_past_libvpxs_range(tmp_path: Path) -> None:
    """libvpx takes each timebase term in 1..10^9: such a Y4M is refused as it is read, in
    one line naming the file and its F tag, before any frame is encoded."""
    for tag in ("F9999999999:1", "F1:2147483648", "F1000000001:1", "F1:1000000001"):
        path = tmp_path / "rate.y4m"
        path.write_bytes(f"YUV4MPEG2 W16 H16 {tag}\nFRAME\n".encode() + bytes(384))
        for command in (("encode-frames", path, "-o", tmp_path / "x.ivf", "--state-out",
                         tmp_path / "x.state"),
                        ("encode", path, "-o", tmp_path / "y.ivf")):
            completed = _run(*command)
            assert completed.returncode == 1, completed.stderr
            _one_line(completed.stderr, "rate.y4m", tag, "1..1000000000")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["rate.y4m"]


def test_absurd_worker_counts_are_usage_errors(tmp_path: Path) -> None:
    completed = _run("encode", SAMPLE, "-o", tmp_path / "o.ivf", "--workers", "99999999999999")
    assert completed.returncode == 2
    assert "at most 1024 workers" in completed.stderr and "Traceback" not in completed.stderr


def _peak_rss_kib(*args: str | Path) -> int:
    """The command's peak resident memory, from a wrapper process whose only child it is."""
    probe = ("import resource, subprocess, sys; "
             "done = subprocess.run(sys.argv[1:], capture_output=True); "
             "sys.exit(done.returncode) if done.returncode else "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", probe, *_command(*args)], capture_output=True,
                          text=True, env=ENV, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_encode_frames_memory_does_not_grow_with_the_clip(tmp_path: Path) -> None:
    # 300 pictures of 320x240 are 34 MB: held at once, they would show in the peak.
    short = _small_y4m(tmp_path / "short.y4m", 10, 320, 240)
    long = _small_y4m(tmp_path / "long.y4m", 300, 320, 240)
    peaks = [_peak_rss_kib("encode-frames", clip, "-o", tmp_path / f"{clip.stem}.ivf",
                           "--quantizer", "127") for clip in (short, long)]
    assert peaks[1] - peaks[0] < 12_000, peaks


_CTRL_C_WHILE_LOADING = """
import builtins, os, signal, sys
real_import = builtins.__import__
def interrupting_import(name, *args, **kwargs):
    if name == "shared.cli":  # the moment the command line starts to load
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupting_import
from shared.console import main
sys.exit(main())
"""


def test_ctrl_c_while_the_command_loads_is_one_line() -> None:
    """Ctrl-C in the first half second, while `excamera` imports its modules, before its own
    handling is in place: one line and 130, not a KeyboardInterrupt traceback."""
    done = subprocess.run([sys.executable, "-c", _CTRL_C_WHILE_LOADING, "encode", "--help"],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=60)
    assert (done.returncode, done.stderr) == (130, "excamera: interrupted\n"), done.stderr


def test_an_output_through_a_symlink_writes_its_target(tmp_path: Path) -> None:
    """A symlinked output is its target, as the same-file check says: the target gets the
    bytes and the link stays (the final rename replaced the link and left the target). A
    FIFO or device as the output is refused at once (a rename would have replaced it, and
    its reader waited for ever)."""
    source = _small_y4m(tmp_path / "in.y4m")
    for command, name in (("encode", "e.ivf"), ("encode", "e.webm"), ("encode-frames", "f.ivf"),
                          ("decode", "d.y4m")):
        target, link = tmp_path / f"target-{name}", tmp_path / f"link-{name}"
        target.write_bytes(b"old")
        link.symlink_to(target)
        given = tmp_path / "e.ivf" if command == "decode" else source
        done = _run(command, given, "-o", link)
        assert done.returncode == 0, done.stderr
        assert link.is_symlink() and os.readlink(link) == str(target), command
        assert target.read_bytes() != b"old" and target.stat().st_size > 10, command
        if command == "encode" and name == "e.ivf":
            (tmp_path / "e.ivf").write_bytes(target.read_bytes())  # decode's input
    fifo = tmp_path / "fifo.ivf"
    os.mkfifo(fifo)
    done = _run("encode", source, "-o", fifo)
    assert done.returncode == 1
    _one_line(done.stderr, f"{fifo}: not a regular file")
    assert fifo.exists() and not fifo.is_file()
