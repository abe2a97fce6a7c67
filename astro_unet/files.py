# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Many FITS files denoised on a Dask cluster: `denoise_files`.

One task per file (`denoise_file`: read, `~astro_unet.denoise_ccd`, write
like the input); each worker process loads the model once.  A file that
cannot be read or denoised is reported in the result table and does not
stop the others; outputs are written atomically, and a rerun skips the
outputs that already exist.
"""

import glob as _glob
import os
import time

import astropy.units as u
from astropy.table import Table

from . import _validation, fitsio
from ._utils import error_message, remove_stale_temporaries, unguarded_main_call
from ._workers import check_model_spec, prepared_model

__all__ = ["denoise_files"]

#: File endings taken from a directory or a glob.
FITS_ENDINGS = tuple(ext + comp for ext in (".fits", ".fit", ".fts")
                     for comp in ("", ".gz", ".bz2", ".fz"))


def _worker_name():
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"local (pid {os.getpid()})"


# ---------------------------------------------------------------------------
# many files


def _has_magic(text):
    return any(c in text for c in "*?[")


def _is_fits_name(name):
    return name.lower().endswith(FITS_ENDINGS)


def _is_output_name(name, suffix):
    """Whether ``name`` looks like an output of a previous run (``*<suffix>.fits``)."""
    if not suffix:
        return False
    lower = name.lower()
    for ending in FITS_ENDINGS:
        if lower.endswith(ending):
            return name[: len(name) - len(ending)].endswith(suffix)
    return False


def _expand_inputs(inputs, suffix):
    """
    List of ``(path, hdu)`` from the accepted ``inputs`` values.

    Directories give their FITS files (not recursive), globs their matches;
    in both, hidden files and outputs of a previous run (names ending with
    ``suffix``) are left out.  Explicit paths are kept as given.
    """
    try:
        from ccdproc import ImageFileCollection
    except ImportError:  # pragma: no cover - ccdproc is a dependency
        ImageFileCollection = ()
    if isinstance(inputs, ImageFileCollection):
        files = inputs.files_filtered(include_path=True)
        return [(os.fspath(f), inputs.ext) for f in files]
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    try:
        items = list(inputs)
    except TypeError:
        raise TypeError(
            "inputs must be a path, a glob, a directory, a list of them or a "
            f"ccdproc.ImageFileCollection, got {type(inputs).__name__}.") from None
    out = []

    def keep(name):
        base = os.path.basename(name)
        return (not base.startswith(".") and _is_fits_name(base)
                and not _is_output_name(base, suffix))

    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"input {item!r} is not a path.")
        text = os.fspath(item)
        if os.path.isdir(text):
            found = sorted(os.path.join(text, f) for f in os.listdir(text)
                           if keep(f) and os.path.isfile(os.path.join(text, f)))
            if not found:
                raise ValueError(f"directory {text} holds no FITS file.")
            out.extend((f, None) for f in found)
        elif _has_magic(text) and not os.path.exists(text):
            found = sorted(f for f in _glob.glob(text, recursive=True)
                           if keep(f) and os.path.isfile(f))
            if not found:
                raise ValueError(f"no FITS file matches {text!r}.")
            out.extend((f, None) for f in found)
        else:
            out.append((text, None))
    if not out:
        raise ValueError("no input files.")
    return out


def _output_path(path, output_dir, suffix):
    directory = os.path.dirname(path) if output_dir is None else os.fspath(output_dir)
    return fitsio.default_output(os.path.join(directory, os.path.basename(path)), suffix)


def denoise_file(path, output, *, ratio, model="default", hdu=None, unit=None,
                 overwrite=False, **denoise_kwargs):
    """
    Denoise one FITS file into ``output``, which keeps the HDU structure of ``path``.

    The image HDU ``hdu`` is read with `astro_unet.fitsio.read_ccd` (``unit``
    for a file without ``BUNIT``), denoised with `~astro_unet.denoise_ccd`
    (``ratio``, ``model`` and ``denoise_kwargs``) and written with
    `astro_unet.fitsio.write_like`.  Returns ``output``.
    """
    from .denoise import denoise_ccd

    ccd, index = fitsio.read_ccd(path, hdu, unit)
    result = denoise_ccd(ccd, ratio=ratio, model=model, **denoise_kwargs)
    fitsio.write_like(path, index, ccd, result, output, overwrite=overwrite,
                      unit_given=unit is not None)
    return output


#: Errors reported in the result table of `denoise_files` without their type.
_FILE_ERRORS = (fitsio.FITSFileError, FileNotFoundError, FileExistsError)


def _denoise_file(path, output, hdu, *, model, ratio, unit, overwrite, kwargs):
    """Task: denoise one file; never raises, returns a result row."""
    start = time.perf_counter()
    row = {"input": path, "output": output, "worker": _worker_name()}
    try:
        if os.path.exists(output) and not overwrite:
            remove_stale_temporaries(output)  # of an earlier, killed --overwrite run
            row["status"] = "skipped"
        else:
            dev, _, _ = prepared_model(
                model, kwargs.get("device"),
                measure_overlap=kwargs.get("overlap") is None and kwargs.get("mode") != "paper")
            denoise_file(path, output, ratio=ratio, model=model, hdu=hdu, unit=unit,
                         overwrite=overwrite, **dict(kwargs, device=dev))
            row["status"] = "ok"
    except Exception as err:  # one bad file must not stop the others
        message = error_message(err)
        if not isinstance(err, _FILE_ERRORS):
            message = f"{type(err).__name__}: {message}"
        row["status"] = f"error: {message}"
    row["seconds"] = time.perf_counter() - start
    return row


def _denoise_kwargs_check(kwargs):
    import inspect

    from .denoise import denoise_ccd

    allowed = set(inspect.signature(denoise_ccd).parameters) - {"ccd", "ratio", "model"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {unknown} (denoise_ccd accepts "
                        f"{sorted(allowed)}).")


#: Thread-count variables of the local worker processes, set before they
#: start (the ``distributed.nanny.pre-spawn-environ`` of `_local_cluster`) to
#: the worker's share of the cores; distributed's default is 1.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _local_cluster(workers, processes=True, threads=None):
    """
    A `distributed.LocalCluster` of ``workers`` one-task workers.

    Each worker process gets ``threads`` torch threads (default
    ``cores // workers``, in `_THREAD_VARIABLES`) and glibc's default malloc
    trim threshold: distributed's own default, ``MALLOC_TRIM_THRESHOLD_=65536``,
    makes glibc hand torch's freed activations back to the system and fault
    them in again for every layer (on the 2-core test machine, `denoise_ccd`
    of a 2048x2048 frame took 6.45 s instead of 3.6 s with one torch thread).
    The caller's own values of these variables are not passed on (an earlier
    cluster may have left distributed's defaults there), and the caller's
    environment is left as it was: distributed writes the pre-spawn variables
    into the parent process.
    """
    import dask
    from distributed import LocalCluster

    cores = os.cpu_count() or 1
    threads = str(max(1, cores // workers) if threads is None else threads)
    kwargs = dict(n_workers=workers, threads_per_worker=1, processes=processes,
                  protocol="tcp", host="127.0.0.1", dashboard_address="127.0.0.1:0")
    if not processes:
        return LocalCluster(**kwargs)
    # None removes a variable: glibc's adaptive default
    environ = {"MALLOC_TRIM_THRESHOLD_": None, **dict.fromkeys(_THREAD_VARIABLES, threads)}
    saved = {key: os.environ.get(key) for key in environ}
    for key in environ:
        # an existing variable of the caller would win over the configuration
        os.environ.pop(key, None)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            return LocalCluster(**kwargs)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_main_guard():
    """
    `RuntimeError` when the local cluster's worker processes would re-run the
    caller's script: a top-level call outside ``if __name__ == "__main__":``
    (they are started with the ``spawn`` method, which imports the main
    script again, and fail with "Nanny failed to start").
    """
    import dask

    if dask.config.get("distributed.worker.multiprocessing-method", "spawn") == "fork":
        return
    where = unguarded_main_call()
    if where is not None:
        path, line = where
        raise RuntimeError(
            f"denoise_files was called at the top level of the script {path} (line {line}). "
            "Its local cluster starts worker processes that import that script again, "
            "which would call denoise_files again in each of them. Put the call under "
            "'if __name__ == \"__main__\":' (see the denoise_files documentation), or "
            "pass client=... (an existing Dask cluster).")


def _default_workers(n_files):
    """Local workers used when `denoise_files` gets no client."""
    cores = os.cpu_count() or 1
    return max(1, min(n_files, cores // 4 or 1))


def denoise_files(inputs, output_dir=None, *, ratio, model="default", client=None,
                  overwrite=False, suffix="_denoised", hdu=None, unit=None, workers=None,
                  **denoise_kwargs):
    """
    Denoise many FITS files on a Dask cluster.

    Each file is read (``hdu``, default the first HDU with image data; the
    primary header's keywords are visible, as with ``astro-unet denoise``),
    denoised with `~astro_unet.denoise_ccd` and written to ``output_dir``
    with the structure of its input (every other HDU copied; ``UNCERT`` and
    ``MASK`` extensions from the result).

    Parameters
    ----------
    inputs : str, path-like, list or `ccdproc.ImageFileCollection`
        Files, directories (their FITS files, not recursive), glob patterns
        (``"raw/*.fits"``), a list mixing them, or an image file collection
        (its filtered files, in its ``ext`` HDU unless ``hdu`` is given).
        Directories and globs leave out hidden files and names ending with
        ``suffix`` (outputs of a previous run).
    output_dir : str or path-like, optional
        Folder of the outputs (created if needed); default: next to each
        input.  Output names are the input name with ``suffix`` before the
        FITS extension (``a.fits`` -> ``a_denoised.fits``).
    ratio : float
        Exposure-time ratio ``r > 1`` (see `~astro_unet.denoise_ccd`).
    model : str, path-like or `~astro_unet.model.AstroUNet`
        As for `~astro_unet.denoise_ccd`.  Names and files are loaded once
        per worker process; a network is sent once to every worker.
    client : `distributed.Client` or str, optional
        The cluster to run on, or the address of its scheduler
        (``"tcp://host:8786"``).  Default: a `~distributed.LocalCluster` of
        ``workers`` processes, closed at the end, whose workers share the
        cores out as torch threads and keep glibc's default
        ``MALLOC_TRIM_THRESHOLD_`` (distributed's own default, 65536, makes
        torch on the CPU about 1.8 times slower; set
        ``distributed.nanny.pre-spawn-environ`` on clusters of your own, see
        :ref:`scale_benchmark`).
    overwrite : bool
        Denoise again files whose output exists (default: skip them, so
        that an interrupted run can be resumed).
    suffix : str
        Added to the output names.
    hdu : int, str or tuple, optional
        Image HDU of every file: index, name or ``(name, ver)``.
    unit : str or `~astropy.units.Unit`, optional
        Unit of files without ``BUNIT``.
    workers : int, optional
        Worker processes of the local cluster (only without ``client``);
        default ``max(1, cpu_count // 4)`` but no more than the files, each
        with ``cpu_count // workers`` torch threads.
    **denoise_kwargs
        Passed to `~astro_unet.denoise_ccd`: ``estimate``, ``device``,
        ``tile_size``, ``overlap``, ``batch_size``, ``exposure_time``,
        ``gain``, ``read_noise``, ``saturation``, ``mode``, ``extrapolate``.

    Returns
    -------
    table : `~astropy.table.Table`
        One row per input, in input order: ``input``, ``output``,
        ``status`` (``"ok"``, ``"skipped"`` or ``"error: <reason>"``),
        ``seconds`` (wall time of the task) and ``worker`` (its address).
        ``table.meta`` has the counts ``n_ok``, ``n_skipped``, ``n_error``
        and the total ``wall_seconds``.

    Raises
    ------
    ValueError
        Bad ``ratio``, no input file, two inputs with the same output, an
        output that would replace its input, unknown model name.
    TypeError
        Bad ``inputs`` or an argument `~astro_unet.denoise_ccd` does not take.
    FileNotFoundError
        The model file does not exist.
    RuntimeError
        Called without ``client`` at the top level of a script, outside
        ``if __name__ == "__main__":`` (see Notes).

    Notes
    -----
    Without a ``client`` the worker processes of the local cluster are
    started the way `multiprocessing` starts processes (``spawn``): each one
    imports the main script again.  In a script, call `denoise_files` under
    the usual guard::

        from astro_unet import denoise_files

        if __name__ == "__main__":
            table = denoise_files("raw/*.fits", "denoised", ratio=4)
            print(table)

    A call at the top level of a script is refused with a `RuntimeError`
    before anything starts (otherwise each worker would call `denoise_files`
    again and fail to start).  Interactive sessions, notebooks and calls
    with a ``client`` need no guard.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> from distributed import Client
    >>> from astro_unet import denoise_files
    >>> from astro_unet.model import AstroUNet, save_model
    >>> folder = tempfile.mkdtemp()
    >>> model = os.path.join(folder, "tiny.pt")
    >>> _ = save_model(AstroUNet(base_channels=4, depth=2), model,
    ...                normalization={"unit": "electron", "transform": "asinh", "scale": 10.0})
    >>> rng = np.random.default_rng(0)
    >>> for name in ("a.fits", "b.fits"):
    ...     fits.PrimaryHDU(rng.poisson(20.0, (32, 32)).astype(np.float32),
    ...                     header=fits.Header({"BUNIT": "electron"})).writeto(
    ...         os.path.join(folder, name))
    >>> with Client(processes=False, n_workers=1, protocol="tcp", host="127.0.0.1",
    ...             dashboard_address="127.0.0.1:0") as client:
    ...     table = denoise_files(folder, os.path.join(folder, "out"), ratio=2,
    ...                           model=model, client=client, device="cpu")
    >>> table["status"].tolist(), sorted(os.listdir(os.path.join(folder, "out")))
    (['ok', 'ok'], ['a_denoised.fits', 'b_denoised.fits'])
    """
    r = _validation.validate_ratio(ratio)
    _denoise_kwargs_check(denoise_kwargs)
    if not isinstance(suffix, str):
        raise TypeError(f"suffix must be a string, got {type(suffix).__name__}.")
    if unit is not None:
        unit = u.Unit(unit)
    files = _expand_inputs(inputs, suffix)
    jobs = []
    seen = {}
    for path, ext in files:
        output = _output_path(path, output_dir, suffix)
        key = os.path.normcase(os.path.abspath(output))
        if key == os.path.normcase(os.path.abspath(path)):
            raise ValueError(f"the output of {path} would replace it: give another "
                             "output_dir or a non-empty suffix.")
        if key in seen:
            raise ValueError(f"{seen[key]} and {path} would both be written to {output}; "
                             "denoise them into different folders.")
        seen[key] = path
        jobs.append((path, output, hdu if hdu is not None else ext))
    model_arg = check_model_spec(model)
    if client is None:
        _check_main_guard()  # before anything is started or created
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)

    from distributed import Client, as_completed

    own_cluster = own_client = None
    if client is None:
        n = _default_workers(len(jobs)) if workers is None else int(workers)
        if n < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}.")
        own_cluster = _local_cluster(n)
        client = own_client = Client(own_cluster)
    elif isinstance(client, str):
        client = own_client = Client(client)
    elif workers is not None:
        raise ValueError("workers applies to the local cluster only; the client given "
                         "already has its workers.")
    start = time.perf_counter()
    try:
        if not isinstance(model_arg, (str, os.PathLike)):
            model_arg = client.scatter(model_arg, broadcast=True, hash=False)
        futures = {}
        for i, (path, output, ext) in enumerate(jobs):
            # absolute paths: the workers need not share this process's folder
            fut = client.submit(_denoise_file, os.path.abspath(path), os.path.abspath(output),
                                ext, model=model_arg, ratio=r, unit=unit, overwrite=overwrite,
                                kwargs=denoise_kwargs, pure=False)
            futures[fut] = i
        rows = [None] * len(jobs)
        for fut in as_completed(list(futures), raise_errors=False):
            i = futures[fut]
            path, output, _ = jobs[i]
            if fut.status == "finished":
                rows[i] = dict(fut.result(), input=path, output=output)
            else:  # the worker died (e.g. killed for memory) on every retry
                err = fut.exception()
                rows[i] = {"input": path, "output": output, "worker": "",
                           "status": f"error: {type(err).__name__}: {err}",
                           "seconds": float("nan")}
            fut.release()
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
    table = Table(rows=[[row[k] for k in ("input", "output", "status", "seconds", "worker")]
                        for row in rows],
                  names=("input", "output", "status", "seconds", "worker"),
                  dtype=(str, str, str, float, str))
    table["seconds"].unit = u.s
    statuses = list(table["status"])
    table.meta.update(n_ok=statuses.count("ok"), n_skipped=statuses.count("skipped"),
                      n_error=sum(s.startswith("error") for s in statuses),
                      wall_seconds=time.perf_counter() - start)
    return table
