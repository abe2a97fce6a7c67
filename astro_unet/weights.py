# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Named, checksummed model files kept in astropy's download cache.

The registry (``astro_unet/data/models/registry.json``, loaded into
`REGISTRY` at import) maps model names to files.  A file is looked up under
one cache key, the *primary* URL (the first of
``astro_unet.conf.weights_base_urls`` joined with the file name), so that a
copy fetched from a mirror, imported from the package (bundled models) or
imported by hand with `astropy.utils.data.import_file_to_cache` is found the
same way.  Files live in astropy's cache for the package ``astro_unet``
(``~/.cache/astro_unet/download/url`` by default); manage them with
``astropy.utils.data`` functions and ``pkgname="astro_unet"``.

Every load checks the file's SHA-256 against the registry.  A mismatch
removes the cached copy and raises `ModelChecksumError`, so the next call
downloads a fresh one.

Model files themselves (format, architecture) are read by
`astro_unet.model.load_model_file`.
"""

import json
import os
import re
import urllib.error
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

from astropy import log
from astropy.table import Table
from astropy.utils import data as _data

from ._config import conf
from ._utils import sha256_file

__all__ = [
    "ModelInfo",
    "ModelChecksumError",
    "ModelUnavailableError",
    "load_model",
    "get_model_path",
    "list_models",
    "verify_model",
    "register_model",
]

#: Package name of astropy's download cache that holds the model files.
PKGNAME = "astro_unet"

_REGISTRY_FILE = "registry.json"
_REGISTRY_FORMAT = "astro_unet-registry"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class ModelChecksumError(ValueError):
    """A model file's SHA-256 digest differs from the registered one."""


class ModelUnavailableError(OSError):
    """A registered model file is neither cached nor bundled and cannot be downloaded."""


def _as_tuple(value, convert=str):
    if value is None:
        return ()
    if isinstance(value, (str, int, float)):
        value = [value]
    return tuple(convert(item) for item in value)


@dataclass(frozen=True)
class ModelInfo:
    """
    One entry of the model registry.

    Parameters
    ----------
    name : str
        Registry name (letters, digits, ``_.+-``; no spaces), e.g.
        ``"wfc3-uvis-r2-5"``.
    filename : str
        File name of the model file (no directory), appended to each base
        URL of ``astro_unet.conf.weights_base_urls``.
    sha256 : str
        SHA-256 hex digest of the file (as returned by
        `astro_unet.model.save_model`).
    description : str, optional
        One-line description.
    training : str, optional
        How the model was trained (data, command, seed).
    instruments : tuple of str, optional
        Instruments/detectors it was trained for, e.g. ``("WFC3/UVIS",)``.
    ratios : tuple of float, optional
        Exposure-time ratios it was trained at.
    units : tuple of str, optional
        Image units it was trained on, e.g. ``("electron",)``.
    bundled : bool, optional
        The file ships with the package in ``astro_unet/data/models/`` and is
        copied into the cache on first use (works offline).
    version : str, optional
        Version of this model.
    urls : tuple of str, optional
        Full download URLs for this file (first is the primary/cache key).
        Empty (default): the base URLs of ``astro_unet.conf.weights_base_urls``.

    Raises
    ------
    ValueError
        A malformed name, file name or digest.

    Examples
    --------
    >>> from astro_unet import ModelInfo
    >>> info = ModelInfo(name="mine", filename="mine.pt", sha256="0" * 64,
    ...                  ratios=[2, 3], instruments="WFC3/UVIS")
    >>> info.ratios, info.instruments
    ((2.0, 3.0), ('WFC3/UVIS',))
    >>> info.download_urls[0].endswith("/mine.pt")
    True
    """

    name: str
    filename: str
    sha256: str
    description: str = ""
    training: str = ""
    instruments: tuple = field(default=())
    ratios: tuple = field(default=())
    units: tuple = field(default=())
    bundled: bool = False
    version: str = "1"
    urls: tuple = field(default=())

    def __post_init__(self):
        name = str(self.name)
        if not _NAME_RE.match(name):
            raise ValueError(
                f"Invalid model name {self.name!r}: use letters, digits and _.+- "
                "(no spaces or path separators)."
            )
        filename = str(self.filename)
        if not filename or os.path.basename(filename) != filename or filename in (".", ".."):
            raise ValueError(
                f"Invalid model file name {self.filename!r} for {name!r}: give a bare "
                "file name without a directory."
            )
        sha = str(self.sha256).strip().lower()
        if not _SHA256_RE.match(sha):
            raise ValueError(
                f"Invalid sha256 {self.sha256!r} for model {name!r}: expected 64 hex digits."
            )
        try:
            ratios = _as_tuple(self.ratios, float)
        except (TypeError, ValueError):
            raise ValueError(
                f"ratios of model {name!r} must be numbers, got {self.ratios!r}."
            ) from None
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "filename", filename)
        set_(self, "sha256", sha)
        set_(self, "description", str(self.description or ""))
        set_(self, "training", str(self.training or ""))
        set_(self, "instruments", _as_tuple(self.instruments))
        set_(self, "ratios", ratios)
        set_(self, "units", _as_tuple(self.units))
        set_(self, "bundled", bool(self.bundled))
        set_(self, "version", str(self.version))
        set_(self, "urls", _as_tuple(self.urls))

    @property
    def download_urls(self):
        """
        URLs to fetch the file from, primary first (`tuple` of str).

        Built from ``urls`` when given, otherwise from the current
        ``astro_unet.conf.weights_base_urls``.
        """
        if self.urls:
            return self.urls
        bases = conf.weights_base_urls
        if isinstance(bases, str):
            bases = [bases]
        urls = []
        for base in bases:
            base = str(base).strip()
            if base:
                urls.append(base if base.endswith("/") else base + "/")
        if not urls:
            raise ValueError(
                "astro_unet.conf.weights_base_urls is empty: no URL to fetch "
                f"model {self.name!r} from."
            )
        return tuple(url + self.filename for url in urls)

    @property
    def cache_key(self):
        """The URL under which the file is stored in the astropy cache (primary URL)."""
        return self.download_urls[0]

    def to_dict(self):
        """Plain-JSON `dict` of the entry (inverse of `from_dict`)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, mapping):
        """Build an entry from a `dict` (e.g. a registry.json item); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(mapping) - known
        if unknown:
            raise ValueError(
                f"Unknown model registry field(s) {sorted(unknown)} in "
                f"{mapping.get('name', mapping)!r}; known fields: {sorted(known)}."
            )
        missing = {"name", "filename", "sha256"} - set(mapping)
        if missing:
            raise ValueError(
                f"Model registry entry {mapping.get('name', mapping)!r} lacks "
                f"{sorted(missing)}."
            )
        return cls(**mapping)


def _load_registry():
    """Read the registry shipped with the package: ``({name: ModelInfo}, default_name)``."""
    source = resources.files("astro_unet") / "data" / "models" / _REGISTRY_FILE
    try:
        content = json.loads(source.read_text(encoding="utf-8"))
        if content.get("format", _REGISTRY_FORMAT) != _REGISTRY_FORMAT:
            raise ValueError(f"'format' is {content.get('format')!r}")
        models = {}
        for item in content.get("models", []):
            info = ModelInfo.from_dict(item)
            if info.name in models:
                raise ValueError(f"model {info.name!r} is listed twice")
            models[info.name] = info
        default = content.get("default")
        if default is not None and default not in models:
            raise ValueError(f"default {default!r} is not one of the listed models")
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise RuntimeError(
            f"The astro_unet model registry {source} is broken ({err}); reinstall "
            "astro_unet."
        ) from err
    return models, default


#: Registered models, ``{name: ModelInfo}``.  Filled from the shipped
#: ``registry.json``; add entries for a session with `register_model`.
REGISTRY, _default_name = _load_registry()
_ALIASES = {"default": _default_name}
del _default_name


def register_model(info, *, overwrite=False, default=False):
    """
    Add a model to the registry for this session.

    Parameters
    ----------
    info : `ModelInfo` or dict
        The entry; a dict is passed to `ModelInfo.from_dict`.
    overwrite : bool, optional
        Replace an existing entry of the same name (default: refuse).
    default : bool, optional
        Also make it the model used for ``model="default"``.

    Returns
    -------
    info : `ModelInfo`
        The registered entry.

    Raises
    ------
    ValueError
        The name is taken (and ``overwrite`` is False), or the entry is malformed.
    TypeError
        ``info`` is neither a `ModelInfo` nor a dict.

    Examples
    --------
    >>> from astro_unet import register_model, list_models
    >>> from astro_unet.weights import REGISTRY
    >>> info = register_model({"name": "my-net", "filename": "my_net.pt",
    ...                        "sha256": "ab" * 32, "description": "my own training"})
    >>> "my-net" in list_models()["name"]
    True
    >>> del REGISTRY["my-net"]  # tidy up
    """
    if isinstance(info, dict):
        info = ModelInfo.from_dict(info)
    if not isinstance(info, ModelInfo):
        raise TypeError(f"info must be a ModelInfo or dict, got {type(info).__name__}.")
    if info.name == "default":
        raise ValueError("'default' is reserved: pass default=True to make a model the default.")
    if info.name in REGISTRY and not overwrite:
        raise ValueError(
            f"A model named {info.name!r} is already registered; pass overwrite=True "
            "to replace it."
        )
    REGISTRY[info.name] = info
    if default:
        _ALIASES["default"] = info.name
    return info


def default_target():
    """Name or path that ``"default"`` stands for (configuration, then registry)."""
    configured = str(conf.default_model or "").strip()
    if configured and configured != "default":
        return configured
    name = _ALIASES.get("default")
    if name is None or name not in REGISTRY:
        raise ValueError(
            "No default astro_unet model is registered yet (the trained weights are "
            "not published in this version). Pass the path of a model file instead, "
            "e.g. load_model('my_model.pt'), denoise_ccd(ccd, ratio=2, model='my_model.pt') "
            "or 'astro-unet denoise ... --model my_model.pt', or set "
            "astro_unet.conf.default_model to a registered name or a path."
        )
    return name


def lookup(name):
    """The registry entry for ``name`` (``"default"`` resolved) or a clear ValueError."""
    if name is None or name == "default":
        name = default_target()
    if name in REGISTRY:
        return REGISTRY[name]
    known = ", ".join(sorted(REGISTRY)) or "none yet"
    raise ValueError(
        f"Unknown model {name!r}: not a registered model name (registered: {known}; "
        "see astro_unet.list_models()). To use a model file, pass its path."
    )


def _in_cache(key):
    try:
        try:
            return _data.is_url_in_cache(key, pkgname=PKGNAME, on_missing="ignore")
        except TypeError:  # astropy < 8: no on_missing
            return _data.is_url_in_cache(key, pkgname=PKGNAME)
    except OSError:  # no usable cache folder (e.g. a read-only HOME): nothing cached
        return False


def _cached_path(key):
    """Path of the cached file for ``key`` (it must be in the cache); never uses the network."""
    return _data.download_file(key, cache=True, sources=[], pkgname=PKGNAME,
                               show_progress=False)


def _remove_from_cache(key):
    if _in_cache(key):
        _data.clear_download_cache(key, pkgname=PKGNAME)


def _bundled_path(info):
    return resources.files("astro_unet") / "data" / "models" / info.filename


_told_read_only = set()


def _bundled_in_place(info, source, err):
    """
    Path of the bundled file itself, when it cannot be copied into the cache
    (``err``: e.g. a read-only HOME), after checking its SHA-256.
    """
    if not isinstance(source, Path) or not source.is_file():  # e.g. inside a zip file
        raise ModelUnavailableError(
            f"Model {info.name!r} cannot be copied into the astropy download cache "
            f"({_describe_os_error(err)}). Set XDG_CACHE_HOME to a writable folder "
            "(astro_unet keeps its cache in $XDG_CACHE_HOME/astro_unet)."
        ) from err
    local = str(source)
    actual = sha256_file(local)
    if actual != info.sha256:
        raise ModelChecksumError(
            f"The bundled file {local} of model {info.name!r} has sha256 {actual[:12]}..., "
            f"expected {info.sha256[:12]}...: reinstall astro_unet."
        )
    if info.name not in _told_read_only:
        _told_read_only.add(info.name)
        log.info(f"astro_unet: the download cache is not writable "
                 f"({_describe_os_error(err)}); using the bundled model file {local} in "
                 "place. Set XDG_CACHE_HOME to a writable folder to cache it.")
    return local


def _describe_os_error(err):
    text = err.strerror or str(err)
    return f"{text}: {err.filename}" if getattr(err, "filename", None) else text


def _check_cached(info, key, source):
    """Verify the cached copy of ``info``; on mismatch remove it and raise."""
    path = _cached_path(key)
    actual = sha256_file(path)
    if actual != info.sha256:
        _remove_from_cache(key)
        raise ModelChecksumError(
            f"Model {info.name!r} ({info.filename}, from {source}) has sha256 "
            f"{actual[:12]}..., expected {info.sha256[:12]}...: the file is corrupt or "
            "not the registered version. The cached copy was removed; run again to "
            "fetch it afresh."
        )
    return path


def _download(info, key):
    """Fetch ``info`` from its URLs in order into the cache under ``key``; return its path."""
    problems = []
    wrong_file = False
    for url in info.download_urls:
        try:
            _data.download_file(key, cache=True, sources=[url], pkgname=PKGNAME)
        except urllib.error.HTTPError as err:
            problems.append(f"{url}: HTTP error {err.code} ({err.reason})")
            err.close()  # the error holds the open response
            continue
        except (urllib.error.URLError, OSError) as err:
            problems.append(f"{url}: {getattr(err, 'reason', None) or err}")
            continue
        path = _cached_path(key)
        actual = sha256_file(path)
        if actual == info.sha256:
            return path
        # a bad server or mirror: drop the file and try the next source
        _remove_from_cache(key)
        wrong_file = True
        problems.append(f"{url}: got a file with sha256 {actual[:12]}...")
    if wrong_file:
        raise ModelChecksumError(
            f"Model {info.name!r} ({info.filename}) could not be downloaded with its "
            f"registered sha256 {info.sha256[:12]}...: " + "; ".join(problems)
            + " The file on the server is corrupt or the registry entry is wrong; "
            "nothing was kept in the cache."
        )
    raise ModelUnavailableError(
        f"Could not download model {info.name!r} ({info.filename}): "
        + "; ".join(problems)
        + ". Check the network and astro_unet.conf.weights_base_urls, or fetch the "
        "file by hand and pass its path."
    )


def get_model_path(name="default", *, allow_internet=None):
    """
    Local path of a registered model file, checked against its SHA-256.

    The file is taken from astropy's cache (package ``astro_unet``); a bundled
    model is copied into the cache on first use; otherwise it is downloaded
    from ``astro_unet.conf.weights_base_urls`` (primary first, then mirrors).

    Parameters
    ----------
    name : str, optional
        Registry name; ``"default"`` is ``astro_unet.conf.default_model`` or
        the registry's default.
    allow_internet : bool or None, optional
        Allow a download when the file is not available locally.  None (the
        default) uses ``astropy.utils.data.conf.allow_internet``.

    Returns
    -------
    path : str
        Path of the file in the cache (do not modify or move it).  When the
        cache cannot be written (e.g. a read-only home folder), a bundled
        model's file is checked and used in place, and an ``INFO`` message
        says so once (set ``XDG_CACHE_HOME`` to a writable folder to cache it).

    Raises
    ------
    ValueError
        Unknown name, or no default model registered.
    ModelUnavailableError
        Not available locally and downloads are disabled or failed.
    ModelChecksumError
        The file does not match the registered digest (the cached copy is removed).

    Examples
    --------
    >>> from astro_unet import get_model_path
    >>> get_model_path("no-such-model")
    Traceback (most recent call last):
    ...
    ValueError: Unknown model 'no-such-model': not a registered model name ...
    """
    info = lookup(name)
    key = info.cache_key
    if _in_cache(key):
        return _check_cached(info, key, "the astropy cache")
    if info.bundled:
        source = _bundled_path(info)
        with resources.as_file(source) as local:
            if not os.path.isfile(local):
                raise ModelUnavailableError(
                    f"The bundled file {local} of model {info.name!r} is missing; "
                    "reinstall astro_unet."
                )
            try:
                _data.import_file_to_cache(key, str(local), remove_original=False,
                                           pkgname=PKGNAME)
            except OSError as err:
                return _bundled_in_place(info, source, err)
        return _check_cached(info, key, f"the bundled file {info.filename}")
    if allow_internet is None:
        allow_internet = _data.conf.allow_internet
    if not allow_internet:
        raise ModelUnavailableError(
            f"Model {info.name!r} ({info.filename}) is not in the astropy download cache "
            "and downloads are disabled (allow_internet=False). On a machine with "
            f"internet access run 'astro-unet models --download {info.name}' (and copy "
            "its astro_unet cache directory here), or download the file from "
            f"{info.download_urls[0]} and pass its path, e.g. load_model('/path/to/"
            f"{info.filename}') or '--model /path/to/{info.filename}'."
        )
    with _data.conf.set_temp("allow_internet", True):
        return _download(info, key)


def looks_like_path(text):
    return (os.sep in text or (os.altsep and os.altsep in text)
            or text.startswith("~") or Path(text).suffix.lower() in (".pt", ".pth"))


def load_model(name_or_path="default", *, allow_internet=None, map_location="cpu"):
    """
    Load a model by registry name or from a file.

    Parameters
    ----------
    name_or_path : str or path-like, optional
        A registry name (see `list_models`), ``"default"``, or the path of a
        model file written by `astro_unet.model.save_model`.  A
        `~pathlib.Path` is always a path; a string is a registry name when
        one of that name exists, otherwise a path.
    allow_internet : bool or None, optional
        See `get_model_path`.
    map_location : str or torch.device, optional
        Where the tensors are loaded (passed to `torch.load`).

    Returns
    -------
    model : `astro_unet.model.AstroUNet`
        In float32 and evaluation mode.
    info : dict
        ``config``, ``normalization``, ``metadata`` of the file plus ``name``
        (registry name, or the file's stem), ``sha256``, ``path`` and
        ``model_info`` (the `ModelInfo`, or None for an unregistered file).

    Raises
    ------
    ValueError
        Unknown name / no default model registered.
    FileNotFoundError
        A path that does not exist.
    ModelChecksumError
        The file differs from the registered digest (also for a local file
        that carries a registered model's file name).
    ModelUnavailableError
        See `get_model_path`.
    astro_unet.model.ModelFileError
        Not a valid model file (truncated, wrong format, ...).
    RuntimeError
        ``map_location`` is a CUDA device and CUDA is not available.

    Examples
    --------
    >>> from astro_unet import load_model
    >>> net, info = load_model()                 # the bundled default, offline
    >>> info["name"], net.config.cond_names
    ('astro-unet-default-v4', ('ratio', 'log_noise'))
    >>> info["sha256"] == info["model_info"].sha256
    True
    """
    target = name_or_path
    if isinstance(target, str) and target == "default":
        target = default_target()

    model_info = None
    if isinstance(target, str) and target in REGISTRY:
        model_info = REGISTRY[target]
        path = get_model_path(target, allow_internet=allow_internet)
        sha = model_info.sha256
        name = model_info.name
    else:
        try:
            path = os.fspath(target)
        except TypeError:
            raise TypeError(
                "name_or_path must be a registry name or a path, got "
                f"{type(name_or_path).__name__}."
            ) from None
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            if isinstance(target, str) and not looks_like_path(target):
                lookup(target)  # raises the "unknown model" error
            raise FileNotFoundError(f"Model file {path} does not exist.")
        sha = sha256_file(path)
        basename = os.path.basename(path)
        for entry in REGISTRY.values():
            if entry.filename == basename:
                if sha != entry.sha256:
                    raise ModelChecksumError(
                        f"{path} has the file name of registered model {entry.name!r} "
                        f"but its sha256 {sha[:12]}... differs from {entry.sha256[:12]}...: "
                        "the copy is corrupt or a different model (rename your own "
                        "models so that they do not clash with registered file names)."
                    )
                model_info = entry
                break
        name = model_info.name if model_info is not None else Path(path).stem

    from .model import ModelFileError, load_model_file

    try:
        model, info = load_model_file(path, map_location=map_location)
    except ModelFileError as err:
        if model_info is None:
            raise
        raise ModelFileError(
            f"Registered model {model_info.name!r} ({model_info.filename}) cannot be "
            f"loaded: {err}"
        ) from err
    info = dict(info)
    info.update(name=name, sha256=sha, path=str(path), model_info=model_info)
    return model, info


def verify_model(name):
    """
    Check the locally available copy of a registered model against its SHA-256.

    A cached copy that does not match is removed from the cache.

    Parameters
    ----------
    name : str
        Registry name (or ``"default"``).

    Returns
    -------
    ok : bool
        True when the cached (or, if not cached yet, the bundled) file matches.

    Raises
    ------
    ValueError
        Unknown name.
    ModelUnavailableError
        Neither cached nor bundled: nothing to verify.

    Examples
    --------
    >>> from astro_unet import verify_model
    >>> verify_model("no-such-model")
    Traceback (most recent call last):
    ...
    ValueError: Unknown model 'no-such-model': not a registered model name ...
    """
    info = lookup(name)
    key = info.cache_key
    if _in_cache(key):
        try:
            _check_cached(info, key, "the astropy cache")
        except ModelChecksumError:
            return False
        return True
    if info.bundled:
        with resources.as_file(_bundled_path(info)) as local:
            if not os.path.isfile(local):
                return False
            return sha256_file(local) == info.sha256
    raise ModelUnavailableError(
        f"Model {info.name!r} is not in the cache: nothing to verify. Download it with "
        f"'astro-unet models --download {info.name}'."
    )


def list_models():
    """
    Table of the registered models.

    Returns
    -------
    table : `~astropy.table.Table`
        Columns ``name``, ``version``, ``default``, ``bundled``, ``cached``
        (file present in astropy's cache), ``sha256`` (first 12 digits),
        ``ratios``, ``instruments``, ``units``, ``filename``, ``description``.
        Zero rows while no model is registered.

    Examples
    --------
    >>> from astro_unet import list_models
    >>> table = list_models()
    >>> table.colnames[:5]
    ['name', 'version', 'default', 'bundled', 'cached']
    """
    names = ["name", "version", "default", "bundled", "cached", "sha256", "ratios",
             "instruments", "units", "filename", "description"]
    rows = []
    default = _ALIASES.get("default")
    for name in sorted(REGISTRY):
        info = REGISTRY[name]
        rows.append((
            info.name, info.version, info.name == default, info.bundled,
            _in_cache(info.cache_key), info.sha256[:12],
            ",".join(f"{r:g}" for r in info.ratios), ",".join(info.instruments),
            ",".join(info.units), info.filename, info.description,
        ))
    if rows:
        table = Table(rows=rows, names=names)
    else:
        dtypes = [str, str, bool, bool, bool, str, str, str, str, str, str]
        table = Table(names=names, dtype=dtypes)
    return table
