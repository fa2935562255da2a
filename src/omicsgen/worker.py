"""A warm worker for local runs. A fresh `omicsgen` process spends 1-4 s of CPU importing torch,
Lightning, anndata and scanpy before it reads a byte (bench/figures.md: train 3.7 s, generate
and impute 1.9 s), and the default run starts 79 of them. The Snakefile starts one worker that
imports these once; each `omicsgen` command then hands its arguments, directory, environment and
standard streams to it, and it forks a child that runs the command as the fresh process would.
The child is a copy of a process that only imported modules, so no job sees another's state.

A command runs in a fresh process as before when no worker answers (a cluster node, a run
outside Snakemake), when the worker runs another installation, or when the job's thread
settings differ from the worker's (numpy's BLAS reads them at import). If the command's process
dies (Snakemake cancels the job), its child stops; if Snakemake dies, the worker stops.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

ENV = "OMICSGEN_WORKER"  # the socket's path, set for the jobs of a local Snakemake run
# Imported once in the worker, in the order the DAG needs them (the first jobs read files and
# filter; a job that comes before its modules are in imports them itself): the stages and what
# their functions import when they run (optional ones, such as magic, skipped where absent).
PRELOAD = ("anndata", "anndata.io", "h5py", "omicsgen.ingest", "scanpy", "omicsgen.preprocess", "omicsgen.mask",
           "torch", "torch.optim", "lightning.pytorch", "omicsgen.train", "omicsgen.generate", "omicsgen.impute",
           "scipy.stats", "scipy.special", "sklearn.decomposition", "sklearn.ensemble",
           "sklearn.experimental.enable_iterative_imputer", "sklearn.impute", "sklearn.linear_model",
           "sklearn.mixture", "sklearn.model_selection", "sklearn.neighbors", "omicsgen.evaluate",
           "omicsgen.evaluate.scores", "omicsgen.complete", "omicsgen.choose", "omicsgen.models.registry",
           "omicsgen.papers", "omicsgen.provenance", "omicsgen.report", "magic", "umap")
# Read when a library loads, so a job must share the worker's values: the thread pools' sizes
# (Snakemake sets each to the job's threads; unset, they follow OMP_NUM_THREADS, 1 in our
# commands) and numba's settings.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
ACCEPTED, REFUSED = b"A", b"R"
forked = False  # True in a child running a command (its log says so)
_HEADER = struct.Struct("!I")


def identity() -> dict:
    """What a job and the worker must share to run the same code the same way."""
    import omicsgen

    return {"python": os.path.realpath(sys.executable), "package": os.path.dirname(os.path.abspath(omicsgen.__file__)),
            "env": {k: os.environ.get(k, "1") for k in THREAD_ENV}
            | {k: v for k, v in os.environ.items() if k.startswith("NUMBA_")}}


# ---- the command's side -----------------------------------------------------------------------
def run_in_worker(argv: list[str]) -> int | None:
    """Run `omicsgen argv` in the worker named by $OMICSGEN_WORKER and return its exit code;
    None when no worker takes it (the caller then runs it itself)."""
    path = os.environ.get(ENV)
    if not path:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        umask = os.umask(0)
        os.umask(umask)
        request = json.dumps({"argv": argv, "argv0": sys.argv[0], "cwd": os.getcwd(), "umask": umask,
                              "environ": dict(os.environ), "identity": identity()}).encode()
        socket.send_fds(conn, [_HEADER.pack(len(request)) + request], [0, 1, 2])
        accepted = conn.recv(1) == ACCEPTED
    except OSError:  # no worker at that path, or it went away before taking the command
        accepted = False
    if not accepted:
        conn.close()
        return None
    try:  # from here on the command has started: it is never run a second time
        reply = _recv_exactly(conn, _HEADER.size)
    except OSError:
        reply = None
    conn.close()
    if reply is None:
        print("omicsgen: error: the process running this command in the run's worker ended without an exit "
              "code (killed, or out of memory?); `worker: false` in the config runs each job afresh", file=sys.stderr)
        return 1
    return _HEADER.unpack(reply)[0]


def _recv_exactly(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


# ---- the worker's side ------------------------------------------------------------------------
def serve(path: str, parent: int) -> None:
    """Fork a child for each command that connects to `path`, importing PRELOAD one module at a
    time between commands, until process `parent` (Snakemake) is gone or a SIGTERM."""
    if sys.path and sys.path[0] == "":  # `python -c`'s entry: imports must not look in a job's directory
        sys.path.pop(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the jobs and Snakemake; Snakemake stops this
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    signal.signal(signal.SIGTERM, _stop)
    to_import = list(PRELOAD)
    try:
        while os.getppid() == parent:
            if selector.select(timeout=0 if to_import else 1.0):
                _fork_each_waiting(listener)
            if to_import:
                _preload(to_import.pop(0))
            _reap(os.WNOHANG)
    except SystemExit:
        pass
    listener.close()
    _reap(0)  # the jobs' CPU time then counts in the worker's, and so in Snakemake's


def _fork_each_waiting(listener: socket.socket) -> None:
    """A child for every command waiting, before the next import: commands that arrive together
    (the first jobs of a run) must not wait an import each."""
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(True)
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            listener.close()
            _child(conn)  # never returns
        conn.close()


def _preload(name: str) -> None:
    import importlib

    try:
        importlib.import_module(name)
    except ImportError:
        return
    if name == "torch.optim":
        import torch

        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # its first optimizer imports torch._dynamo (1.2 s)


def _stop(signum, frame) -> None:
    raise SystemExit(0)


def _reap(options: int) -> None:
    try:
        while os.waitpid(-1, options)[0]:
            pass
    except ChildProcessError:
        pass


def _child(conn: socket.socket) -> None:
    global forked
    forked, code = True, 1
    try:
        message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        size = _HEADER.unpack(message[: _HEADER.size])[0]
        body = message[_HEADER.size :]
        while len(body) < size:
            body += conn.recv(size - len(body))
        request = json.loads(body)
        if request["identity"] != identity() or len(fds) != 3:
            conn.sendall(REFUSED)
            os._exit(0)
        for fd, target in zip(fds, (0, 1, 2)):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["environ"])
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        conn.sendall(ACCEPTED)
        threading.Thread(target=_stop_when_gone, args=(conn,), daemon=True).start()
        code = _run(request["argv0"], request["argv"])
        sys.stdout.flush()
        sys.stderr.flush()
        conn.sendall(_HEADER.pack(code))
    except BaseException:  # noqa: BLE001 - whatever happens, the child must not return into the worker's loop
        traceback.print_exc()
    finally:
        os._exit(code)


def _run(argv0: str, argv: list[str]) -> int:
    """`omicsgen argv` as `cli.run` runs it: its exit code, a traceback on an uncaught error."""
    import logging

    from .cli import main

    sys.argv = [argv0, *argv]  # Lightning's DDP launcher starts its other processes from it
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse: --help, a bad option
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = 1
    logging.shutdown()
    return code


def _stop_when_gone(conn: socket.socket) -> None:
    """The command sends nothing after its request: an end of stream means its process is gone."""
    try:
        while conn.recv(1):
            pass
    except OSError:
        pass
    os._exit(1)


# ---- Snakemake's side -------------------------------------------------------------------------
def start() -> str | None:
    """Start a worker for this run's local jobs, set $OMICSGEN_WORKER for them, and stop it when
    this process exits. Returns the socket's path; None on macOS and Windows, where forking a
    process that loaded torch's libraries is not safe (Python's multiprocessing spawns there)."""
    if not sys.platform.startswith("linux"):
        return None
    folder = tempfile.mkdtemp(prefix="omicsgen-")
    path = os.path.join(folder, "worker.sock")
    process = launch(path)

    def stop() -> None:
        process.terminate()
        process.wait()
        Path(path).unlink(missing_ok=True)
        os.rmdir(folder)

    atexit.register(stop)
    os.environ[ENV] = path
    return path


def launch(path: str) -> subprocess.Popen:
    """The worker process, serving at `path` while this process lives."""
    env = {**os.environ, **dict.fromkeys(THREAD_ENV, "1")}  # the rules' 1-thread jobs; others start fresh
    env.pop(ENV, None)
    command = f"from omicsgen.worker import serve; serve({path!r}, {os.getpid()})"
    return subprocess.Popen([sys.executable, "-c", command], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
