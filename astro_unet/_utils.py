# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Shared helpers with public names: atomic file writes, file hashes, one-line error messages.

Every file the package writes (``astro-unet denoise`` / ``simulate``,
`~astro_unet.denoise_files`, `~astro_unet.denoise_large`,
`~astro_unet.model.save_model`) is written to a hidden temporary file in the
output's folder and renamed over the output when complete (`os.replace`), so
that an interrupted run never leaves a truncated output.

* The temporary file is created like ``open(path, "w")`` creates a file
  (mode ``0o666`` less the umask; `tempfile.mkstemp` would give ``0o600``),
  and an output that is replaced keeps its mode, as when it is rewritten in
  place.
* Its name, ``.astro-unet-<host>-<pid>-<random>-<output name>``, says which
  process wrote it.  A process killed during a write (SIGKILL, power cut)
  leaves that file behind; the next write of the same output removes the
  ones whose process is gone (same host) or that are older than
  `STALE_SECONDS` (other hosts, or names without a process id).
"""

import contextlib
import hashlib
import os
import re
import secrets
import socket
import stat
import time

__all__ = []  # private module

#: Start of the names of temporary files (hidden, so that globs and
#: directory listings of `astro_unet.denoise_files` leave them out).
TEMP_PREFIX = ".astro-unet-"

#: Age (seconds) after which a temporary file that cannot be attributed to a
#: process of this host is taken to be stale.
STALE_SECONDS = 24 * 3600

_NAME = re.compile(r"^(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})-(?P<rest>.+)$")


def _host_tag():
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def _process_alive(pid):
    """Whether process ``pid`` of this host exists (True when it cannot be told)."""
    if os.name == "nt":  # pragma: no cover - os.kill(pid, 0) is not a probe there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def temporary_name(path):
    """Name of a new temporary file for ``path`` (in the same folder)."""
    directory, base = os.path.split(os.path.abspath(os.fspath(path)))
    name = f"{TEMP_PREFIX}{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}-{base}"
    return os.path.join(directory, name)


def remove_stale_temporaries(path):
    """
    Remove the temporary files of earlier, killed writes of ``path``.

    Returns the list of removed files.  Files of live processes of this host
    (this one included) and recent files of other hosts are left alone.
    """
    directory, base = os.path.split(os.path.abspath(os.fspath(path)))
    removed = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return removed
    now = time.time()
    host = _host_tag()
    ending = "-" + base
    for entry in entries:
        if not (entry.startswith(TEMP_PREFIX) and entry.endswith(ending)):
            continue
        full = os.path.join(directory, entry)
        match = _NAME.match(entry[len(TEMP_PREFIX):])
        try:
            if match is not None and match["rest"] == base and match["host"] == host:
                pid = int(match["pid"])
                stale = pid != os.getpid() and not _process_alive(pid)
            else:  # another host, or a name of an older version (mkstemp)
                stale = now - os.stat(full).st_mtime > STALE_SECONDS
            if stale and os.path.isfile(full):
                os.unlink(full)
                removed.append(full)
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    return removed


@contextlib.contextmanager
def atomic_output(path):
    """
    Context manager: yield a new, empty temporary file path beside ``path``;
    when the block ends without an exception, rename it to ``path``.

    The temporary file has the permissions of a file made by ``open(path,
    "w")`` under the current umask (or those of ``path`` when it exists); it
    is removed if the block raises.  Stale temporary files of ``path`` left by
    killed processes are removed first (`remove_stale_temporaries`).
    """
    path = os.fspath(path)
    remove_stale_temporaries(path)
    tmp = temporary_name(path)
    # O_EXCL: a new file; mode 0o666: the kernel applies the umask, as open() does
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(fd)
    try:
        yield tmp
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = None
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _is_main_guard(test):
    """Whether an ``if`` test is ``__name__ == "__main__"`` (either order)."""
    import ast

    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    consts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(consts) == 1


def unguarded_main_call():
    """
    ``(file, line)`` of the main script's top-level statement that is running
    now, when it is not inside ``if __name__ == "__main__":``; None otherwise
    (interactive sessions, notebooks, ``python -c``, guarded calls, or when
    the script cannot be read).

    Worker processes started with the ``spawn`` method import the main script
    again: an unguarded call that starts them would start them again in each
    of them (Python refuses: the workers fail to start).
    """
    import ast
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path or not os.path.isfile(path):
        return None
    frame = sys._getframe(1)
    top = None
    while frame is not None:
        if frame.f_globals is main.__dict__ and frame.f_code.co_name == "<module>":
            top = frame
        frame = frame.f_back
    if top is None:
        return None
    line = top.f_lineno
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
    for node in tree.body:
        if isinstance(node, ast.If) and _is_main_guard(node.test) and node.body:
            if node.body[0].lineno <= line <= node.body[-1].end_lineno:
                return None
    return path, line


def error_message(err):
    """The message of exception ``err`` on one line (its type name when it has none)."""
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    elif isinstance(err, OSError) and err.strerror and err.filename:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = str(err)
    text = " ".join(text.split())
    if not text:
        text = type(err).__name__
    return text


def sha256_file(path):
    """The sha256 of the file at ``path`` (hex digest), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
