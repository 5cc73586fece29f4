"""Download the released COCO weights (``mask_rcnn_coco.h5``), safely.

The old ``utils.download_trained_weights`` copied the response straight into
the destination, so an interrupted download or an HTML error page left a
broken ``mask_rcnn_coco.h5`` behind that later failed to load with an obscure
HDF5 error. Here the file is written to a temporary file next to the
destination, checked to be a Keras weights file in the legacy HDF5 layout
(:mod:`mrcnn.weights.io`), and only then renamed into place with
:func:`os.replace` (atomic on POSIX and Windows). On any failure the temporary
file is removed and an existing file at the destination is left untouched.

Only the standard library (``urllib.request``) is used; proxies set through
the usual ``http_proxy`` / ``https_proxy`` variables are honoured by it.

The URL is, in order of precedence: the ``url`` argument, the environment
variable ``MRCNN_COCO_WEIGHTS_URL`` (a mirror, or a ``file://`` URL on a
machine without internet access), :data:`COCO_MODEL_URL`.
"""

import http.client
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request

import h5py

from mrcnn.weights.io import open_weights_file, read_attr_strings

__all__ = ["COCO_MODEL_URL", "URL_ENV_VAR", "WeightsDownloadError",
           "download_trained_weights", "resolve_weights_url", "check_weights_file"]

# URL of the released COCO-trained weights (same constant as the original utils).
COCO_MODEL_URL = ("https://github.com/matterport/Mask_RCNN/releases/download/v2.0/"
                  "mask_rcnn_coco.h5")

# Environment variable overriding COCO_MODEL_URL (when no ``url`` is passed).
URL_ENV_VAR = "MRCNN_COCO_WEIGHTS_URL"

_CHUNK = 1 << 20          # bytes read per iteration
_TEMP_SUFFIX = ".part"    # temporary files are ".<name>.<random>.part" in the same folder


class WeightsDownloadError(ConnectionError):
    """The weights could not be fetched (no network, unreachable host, HTTP
    error, connection dropped). A subclass of ``ConnectionError`` (so of
    ``OSError``). Attributes: ``url``, ``path`` (the destination), ``reason``.
    """

    def __init__(self, url, path, reason):
        self.url = url
        self.path = path
        self.reason = reason
        super().__init__(
            f"Could not download the Mask R-CNN weights from {url} to {path!r}: {reason}. "
            f"To proceed offline, download the file on another machine and copy it to "
            f"{path!r}, or set the environment variable {URL_ENV_VAR} to a reachable "
            f"mirror (a file:// URL works too).")


def resolve_weights_url(url=None):
    """The URL to download from: ``url``, else ``$MRCNN_COCO_WEIGHTS_URL``, else
    :data:`COCO_MODEL_URL`."""
    if url:
        return str(url)
    return os.environ.get(URL_ENV_VAR) or COCO_MODEL_URL


# --------------------------------------------------------------------------- progress

class _TextProgress:
    """A one-line progress display on stderr, rewritten in place (``\\r``)."""

    def __init__(self, total, desc):
        self.total = total
        self.desc = desc
        self.done = 0
        self._last = 0.0
        self._start = time.monotonic()

    def update(self, n):
        self.done += n
        now = time.monotonic()
        if now - self._last >= 0.2 or (self.total and self.done >= self.total):
            self._last = now
            self._write()

    def _write(self):
        mb = self.done / 1e6
        rate = mb / max(time.monotonic() - self._start, 1e-6)
        if self.total:
            pct = 100.0 * self.done / self.total
            width = 30
            filled = int(width * min(self.done, self.total) / self.total)
            bar = "#" * filled + "-" * (width - filled)
            line = f"{self.desc}: [{bar}] {pct:5.1f}% {mb:.1f}/{self.total / 1e6:.1f} MB"
        else:
            line = f"{self.desc}: {mb:.1f} MB"
        sys.stderr.write(f"\r{line} ({rate:.1f} MB/s)")
        sys.stderr.flush()

    def close(self):
        self._write()
        sys.stderr.write("\n")
        sys.stderr.flush()


class _NoProgress:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total, desc, verbose):
    if not verbose:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _TextProgress(total, desc)
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr)


# --------------------------------------------------------------------------- verification

def _describe_start(path):
    """What the first bytes of ``path`` look like (for error messages)."""
    with open(path, "rb") as f:
        head = f.read(256)
    size = os.path.getsize(path)
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        kind = "an HTML/XML page"
    elif text.startswith((b"{", b"[")):
        kind = "JSON or other text"
    elif not head:
        kind = "an empty file"
    else:
        kind = "data that is not HDF5"
    return f"{kind} of {size} bytes starting with {head[:60]!r}"


def check_weights_file(path, url=None):
    """Check that ``path`` is a Keras weights file in the legacy HDF5 layout:
    readable HDF5 with a ``layer_names`` attribute at the root or under
    ``model_weights`` (the released COCO file's layout, see :mod:`mrcnn.weights.io`).

    Returns the number of layers the file lists.

    Raises:
        ValueError: not HDF5 (e.g. an HTML error page), or HDF5 without
            ``layer_names``. The message names ``url`` (where the file came
            from) when given and says what was found.
    """
    path = os.fspath(path)
    source = f" downloaded from {url}" if url else ""
    try:
        f = open_weights_file(path)
    except ValueError as err:
        raise ValueError(f"The file{source} is not the Mask R-CNN HDF5 weights file: found "
                         f"{_describe_start(path)}. (The server may have returned an error "
                         f"page; check the URL.)") from err
    with f:
        for group in (f, f.get("model_weights")):
            if isinstance(group, h5py.Group):
                names = read_attr_strings(group, "layer_names")
                if names is not None:
                    return len(names)
        found = (f"top-level entries {sorted(f.keys())[:10]}, "
                 f"attributes {sorted(f.attrs.keys())[:10]}")
    raise ValueError(f"The file{source} is HDF5 but not a Keras weights file in the legacy "
                     f"layout: no 'layer_names' attribute at the root or under "
                     f"'model_weights' (found {found}).")


# --------------------------------------------------------------------------- download

def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fetch(url, dest, out, verbose, timeout):
    """Stream ``url`` into the open binary file ``out``. Network failures raise
    WeightsDownloadError."""
    request = urllib.request.Request(url, headers={"User-Agent": "mrcnn-weights-download"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length") if response.headers else None
            total = int(length) if length and length.isdigit() else None
            bar = _progress(total, os.path.basename(dest), verbose)
            received = 0
            try:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            finally:
                bar.close()
    except urllib.error.HTTPError as err:
        raise WeightsDownloadError(url, dest, f"HTTP error {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise WeightsDownloadError(url, dest, f"cannot reach the server ({err.reason})") from err
    except (socket.timeout, TimeoutError) as err:
        raise WeightsDownloadError(url, dest, f"timed out after {timeout} s ({err})") from err
    except (http.client.HTTPException, ConnectionError) as err:
        raise WeightsDownloadError(
            url, dest, f"the connection failed ({type(err).__name__}: {err})") from err
    if total is not None and received != total:
        raise WeightsDownloadError(url, dest, f"incomplete download: received {received} of "
                                              f"{total} bytes")


def download_trained_weights(coco_model_path, verbose=1, url=None, *, timeout=60.0):
    """Download the COCO-trained weights to ``coco_model_path``.

    The file is written to a temporary file in the destination folder, checked
    (:func:`check_weights_file`) and then atomically renamed to
    ``coco_model_path``, replacing an older file there. On failure nothing is
    left behind and an existing file at ``coco_model_path`` is unchanged.

    Args:
        coco_model_path: destination path (its folder is created if needed).
        verbose: 0 silent; otherwise messages on stdout and a progress bar on
            stderr (tqdm if installed, else a text line).
        url: where to download from; default ``$MRCNN_COCO_WEIGHTS_URL`` or
            :data:`COCO_MODEL_URL`.
        timeout: socket timeout in seconds (per blocking operation).

    Returns:
        ``coco_model_path`` (as a string).

    Raises:
        WeightsDownloadError: (a ``ConnectionError``) no network, unreachable
            host, HTTP error or dropped connection; the message names the URL,
            the destination and how to proceed offline.
        ValueError: the downloaded file is not the HDF5 weights file (e.g. an
            HTML page, or HDF5 without ``layer_names``).
    """
    url = resolve_weights_url(url)
    dest = os.fspath(coco_model_path)
    folder = os.path.dirname(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)
    if verbose:
        print(f"Downloading pretrained model to {dest} ...")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest)}.", suffix=_TEMP_SUFFIX,
                               dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            _fetch(url, dest, out, verbose, timeout)
            out.flush()
            os.fsync(out.fileno())
        check_weights_file(tmp, url=url)
        # mkstemp creates the file 0600; give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    if verbose:
        print("... done downloading pretrained model!")
    return dest
