"""download_trained_weights against a local HTTP server (never the internet)."""

import functools
import http.server
import os
import socket
import threading

import h5py
import numpy as np
import pytest

from mrcnn import utils

from mrcnn.weights import download
from mrcnn.weights.io import open_weights_file, read_attr_strings

HTML = b"<!DOCTYPE html><html><head><title>Rate limited</title></head><body>no</body></html>"


def _write_legacy_h5(path, under_model_weights=False, with_layer_names=True):
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if under_model_weights else f
        if with_layer_names:
            root.attrs["layer_names"] = np.array([b"conv1"])
        g = root.create_group("conv1")
        g.attrs["weight_names"] = np.array([b"conv1/kernel:0"])
        g.create_dataset("conv1/kernel:0", data=np.arange(12, dtype=np.float32).reshape(3, 4))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path_factory, monkeypatch):
    """Serves weights.h5, nested.h5 (model_weights layout), no_names.h5,
    page.html; anything else is a 404. Yields the base URL."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.delenv(download.URL_ENV_VAR, raising=False)
    root = tmp_path_factory.mktemp("served")
    _write_legacy_h5(root / "weights.h5")
    _write_legacy_h5(root / "nested.h5", under_model_weights=True)
    _write_legacy_h5(root / "no_names.h5", with_layer_names=False)
    (root / "page.html").write_bytes(HTML)
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _assert_no_temp_files(folder):
    leftovers = [n for n in os.listdir(folder) if n.endswith(download._TEMP_SUFFIX)]
    assert leftovers == []


def test_utils_reexports():
    assert utils.download_trained_weights is download.download_trained_weights
    assert utils.COCO_MODEL_URL == download.COCO_MODEL_URL == (
        "https://github.com/matterport/Mask_RCNN/releases/download/v2.0/mask_rcnn_coco.h5")


def test_resolve_url_precedence(monkeypatch):
    monkeypatch.delenv(download.URL_ENV_VAR, raising=False)
    assert download.resolve_weights_url() == download.COCO_MODEL_URL
    monkeypatch.setenv(download.URL_ENV_VAR, "http://mirror/w.h5")
    assert download.resolve_weights_url() == "http://mirror/w.h5"
    assert download.resolve_weights_url("http://other/w.h5") == "http://other/w.h5"


def test_success_writes_a_loadable_file(server, tmp_path, capsys):
    dest = tmp_path / "sub" / "mask_rcnn_coco.h5"
    out = utils.download_trained_weights(dest, verbose=1, url=f"{server}/weights.h5")
    assert out == str(dest)
    with open_weights_file(dest) as f:
        assert read_attr_strings(f, "layer_names") == ["conv1"]
        assert read_attr_strings(f["conv1"], "weight_names") == ["conv1/kernel:0"]
        np.testing.assert_array_equal(f["conv1"]["conv1/kernel:0"][()],
                                      np.arange(12, dtype=np.float32).reshape(3, 4))
    captured = capsys.readouterr()
    assert "Downloading pretrained model to" in captured.out
    assert "done downloading" in captured.out
    assert "mask_rcnn_coco.h5" in captured.err          # the progress line / bar
    _assert_no_temp_files(dest.parent)
    # permissions like a plain open() (mkstemp's 0600 is not kept)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(dest).st_mode & 0o777 == 0o666 & ~umask


def test_text_progress_without_tqdm(server, tmp_path, capsys, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name == "tqdm":
            raise ImportError("no tqdm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    dest = tmp_path / "w.h5"
    download.download_trained_weights(dest, url=f"{server}/weights.h5")
    err = capsys.readouterr().err
    assert "\rw.h5: [" in err and "100.0%" in err and err.endswith("\n")


def test_quiet_prints_nothing(server, tmp_path, capsys):
    download.download_trained_weights(tmp_path / "w.h5", verbose=0, url=f"{server}/weights.h5")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_model_weights_layout_accepted(server, tmp_path):
    dest = tmp_path / "w.h5"
    download.download_trained_weights(dest, verbose=0, url=f"{server}/nested.h5")
    assert dest.is_file()


def test_replaces_an_existing_file(server, tmp_path):
    dest = tmp_path / "w.h5"
    dest.write_bytes(b"old")
    download.download_trained_weights(dest, verbose=0, url=f"{server}/weights.h5")
    with open_weights_file(dest):
        pass


def test_html_page_is_rejected(server, tmp_path):
    url = f"{server}/page.html"
    dest = tmp_path / "mask_rcnn_coco.h5"
    with pytest.raises(ValueError) as info:
        download.download_trained_weights(dest, verbose=0, url=url)
    msg = str(info.value)
    assert url in msg and "HTML" in msg and "not the Mask R-CNN HDF5 weights file" in msg
    assert not dest.exists()
    _assert_no_temp_files(tmp_path)


def test_html_page_leaves_existing_file_untouched(server, tmp_path):
    dest = tmp_path / "mask_rcnn_coco.h5"
    _write_legacy_h5(dest)
    before = dest.read_bytes()
    with pytest.raises(ValueError):
        download.download_trained_weights(dest, verbose=0, url=f"{server}/page.html")
    assert dest.read_bytes() == before
    _assert_no_temp_files(tmp_path)


def test_hdf5_without_layer_names_is_rejected(server, tmp_path):
    url = f"{server}/no_names.h5"
    dest = tmp_path / "w.h5"
    with pytest.raises(ValueError, match="no 'layer_names' attribute") as info:
        download.download_trained_weights(dest, verbose=0, url=url)
    assert url in str(info.value) and "conv1" in str(info.value)   # what was found
    assert not dest.exists()
    _assert_no_temp_files(tmp_path)


def test_http_404_names_url_and_destination(server, tmp_path):
    url = f"{server}/missing.h5"
    dest = tmp_path / "w.h5"
    with pytest.raises(ConnectionError) as info:
        download.download_trained_weights(dest, verbose=0, url=url)
    err = info.value
    assert isinstance(err, download.WeightsDownloadError) and isinstance(err, OSError)
    msg = str(err)
    assert url in msg and str(dest) in msg and "404" in msg
    assert download.URL_ENV_VAR in msg and "copy it to" in msg
    assert err.url == url and err.path == str(dest)
    assert not dest.exists()
    _assert_no_temp_files(tmp_path)


def test_refused_connection(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    url = f"http://127.0.0.1:{_free_port()}/mask_rcnn_coco.h5"
    dest = tmp_path / "w.h5"
    dest.write_bytes(b"previous")
    with pytest.raises(download.WeightsDownloadError) as info:
        download.download_trained_weights(dest, verbose=0, url=url, timeout=5)
    msg = str(info.value)
    assert url in msg and str(dest) in msg and "cannot reach the server" in msg
    assert "refused" in msg.lower()
    assert "offline" in msg
    assert dest.read_bytes() == b"previous"
    _assert_no_temp_files(tmp_path)


def test_env_var_overrides_default_url(server, tmp_path, monkeypatch):
    monkeypatch.setenv(download.URL_ENV_VAR, f"{server}/weights.h5")
    dest = tmp_path / "w.h5"
    download.download_trained_weights(dest, verbose=0)
    with open_weights_file(dest):
        pass
    # and the message of a failure names the URL that was really used
    monkeypatch.setenv(download.URL_ENV_VAR, f"{server}/gone.h5")
    with pytest.raises(download.WeightsDownloadError, match="gone.h5"):
        download.download_trained_weights(tmp_path / "x.h5", verbose=0)
    # an explicit url wins over the variable
    download.download_trained_weights(tmp_path / "y.h5", verbose=0, url=f"{server}/weights.h5")
    assert (tmp_path / "y.h5").is_file()
    _assert_no_temp_files(tmp_path)


def test_truncated_download_is_a_connection_error(tmp_path, monkeypatch):
    """A server that announces more bytes than it sends (dropped connection)."""
    monkeypatch.setenv("no_proxy", "*")

    class Short(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Short)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/w.h5"
        with pytest.raises(download.WeightsDownloadError, match=r"w\.h5"):
            download.download_trained_weights(tmp_path / "w.h5", verbose=0, url=url,
                                              timeout=5)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not (tmp_path / "w.h5").exists()
    _assert_no_temp_files(tmp_path)


def test_check_weights_file_counts_layers(tmp_path):
    _write_legacy_h5(tmp_path / "a.h5")
    assert download.check_weights_file(tmp_path / "a.h5") == 1
    (tmp_path / "b.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="an empty file"):
        download.check_weights_file(tmp_path / "b.h5")
