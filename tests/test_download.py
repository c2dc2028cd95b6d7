"""Tests for data/download.py against a local HTTP server (127.0.0.1 only, no internet)."""
import hashlib
import http.server
import io
import logging
import os
import socket
import tarfile
import threading
import time
import zipfile

import pytest

from data.download import DownloadError, download, safe_extract


# ---------------------------------------------------------------------------------------------
# A misbehaving file server


class Served:
    """One file and how the server mistreats requests for it."""

    def __init__(self, data, ignore_range=False, cut_after=None, cut_times=0,
                 fail_status=503, fail_times=0, stall_seconds=0.0, stall_times=0):
        self.data = data
        self.ignore_range = ignore_range    # always answer 200 with the whole file
        self.cut_after = cut_after          # close the socket after this many body bytes...
        self.cut_times = cut_times          # ...for this many requests
        self.fail_status = fail_status      # answer this status...
        self.fail_times = fail_times        # ...for this many requests
        self.stall_seconds = stall_seconds  # say nothing this long before answering...
        self.stall_times = stall_times      # ...for this many requests


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        server = self.server
        path = self.path.split('?', 1)[0]
        entry = {'path': self.path, 'range': self.headers.get('Range'), 'status': None,
                 'sent': 0}
        with server.lock:
            server.log.append(entry)
            f = server.files.get(path)
            fail = f is not None and f.fail_times > 0
            if fail:
                f.fail_times -= 1
            cut = f is not None and not fail and f.cut_after is not None and f.cut_times > 0
            if cut:
                f.cut_times -= 1
            stall = f is not None and f.stall_times > 0
            if stall:
                f.stall_times -= 1
        if stall:
            entry['status'] = 'stalled'
            time.sleep(f.stall_seconds)
            self.close_connection = True
            return
        if f is None or fail:
            entry['status'] = 404 if f is None else f.fail_status
            body = b'not here' if f is None else b'busy'
            self.send_response(entry['status'])
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return

        data, start = f.data, 0
        rng = self.headers.get('Range')
        if rng and not f.ignore_range:
            start = int(rng.split('=', 1)[1].split('-', 1)[0])
            if start >= len(data):
                entry['status'] = 416
                self.send_response(416)
                self.send_header('Content-Range', f'bytes */{len(data)}')
                self.send_header('Content-Length', '0')
                self.end_headers()
                return
            entry['status'] = 206
            self.send_response(206)
            self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
        else:
            entry['status'] = 200
            self.send_response(200)
        body = data[start:]
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Content-Type', 'application/octet-stream')
        self.end_headers()
        # Logged before writing: the client may finish (and the test assert) before the
        # write returns in this thread.
        if cut:
            # Announce the full length, send part of it, then drop the connection.
            entry['sent'] = min(len(body), f.cut_after)
            self.wfile.write(body[:f.cut_after])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        entry['sent'] = len(body)
        self.wfile.write(body)


class FileServer(http.server.ThreadingHTTPServer):
    """Serves in-memory files on 127.0.0.1:<free port>; records every request in `log`."""
    daemon_threads = True

    def __init__(self):
        super().__init__(('127.0.0.1', 0), _Handler)
        self.files = {}
        self.log = []
        self.lock = threading.Lock()
        self.url = f'http://127.0.0.1:{self.server_address[1]}'

    def handle_error(self, request, client_address):
        pass  # clients that gave up (timeouts, cuts) make the writes fail; that is expected

    def add(self, path, data, **options):
        self.files[path] = Served(data, **options)
        return self.url + path

    def requests_for(self, path):
        return [e for e in self.log if e['path'].split('?', 1)[0] == path]


@pytest.fixture
def server():
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={'poll_interval': 0.05},
                              daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def payload(n=200_000, seed=0):
    # Incompressible and position-dependent, so a misplaced byte range changes the checksum.
    out, block, i = bytearray(), b'', 0
    while len(out) < n:
        block = hashlib.sha256(block + bytes([seed % 256]) + i.to_bytes(8, 'little')).digest()
        out += block
        i += 1
    return bytes(out[:n])


def md5(data):
    return hashlib.md5(data).hexdigest()


# chunk_size divides the cut points below: bytes of a read that a dropped connection
# interrupts are discarded by urllib3, so the resume point is the last whole chunk written.
FAST = dict(backoff=0.01, progress=False, timeout=5, chunk_size=10_000)


# ---------------------------------------------------------------------------------------------
# download()


def test_plain_download_with_md5_and_sha256(server, tmp_path):
    data = payload()
    url = server.add('/f.bin', data)
    dest = tmp_path / 'sub' / 'f.bin'
    out = download(url, str(dest), md5=md5(data), sha256=hashlib.sha256(data).hexdigest(),
                   size=len(data), **FAST)
    assert out == str(dest)
    assert dest.read_bytes() == data
    assert not os.path.exists(str(dest) + '.part')
    assert [e['status'] for e in server.log] == [200]
    assert server.log[0]['range'] is None


def test_resumes_from_existing_part(server, tmp_path):
    data = payload()
    url = server.add('/f.bin', data)
    dest = tmp_path / 'f.bin'
    half = len(data) // 2 + 123
    (tmp_path / 'f.bin.part').write_bytes(data[:half])
    download(url, str(dest), md5=md5(data), **FAST)
    assert dest.read_bytes() == data
    assert len(server.log) == 1
    assert server.log[0]['range'] == f'bytes={half}-'
    assert server.log[0]['status'] == 206
    assert server.log[0]['sent'] == len(data) - half


def test_connection_cut_mid_file_is_resumed(server, tmp_path):
    data = payload()
    url = server.add('/f.bin', data, cut_after=50_000, cut_times=2)
    dest = tmp_path / 'f.bin'
    download(url, str(dest), md5=md5(data), **FAST)
    assert dest.read_bytes() == data
    log = server.log
    assert [e['range'] for e in log] == [None, 'bytes=50000-', 'bytes=100000-']
    assert [e['status'] for e in log] == [200, 206, 206]
    assert sum(e['sent'] for e in log) == len(data)   # nothing was fetched twice


def test_server_without_range_support_restarts(server, tmp_path):
    data = payload()
    url = server.add('/f.bin', data, ignore_range=True, cut_after=70_000, cut_times=1)
    dest = tmp_path / 'f.bin'
    download(url, str(dest), md5=md5(data), **FAST)
    assert dest.read_bytes() == data
    assert [e['range'] for e in server.log] == [None, 'bytes=70000-']
    assert [e['status'] for e in server.log] == [200, 200]


def test_stale_part_is_discarded_when_range_is_ignored(server, tmp_path):
    data = payload()
    url = server.add('/f.bin', data, ignore_range=True)
    (tmp_path / 'f.bin.part').write_bytes(b'garbage from another file' * 100)
    download(url, str(tmp_path / 'f.bin'), md5=md5(data), **FAST)
    assert (tmp_path / 'f.bin').read_bytes() == data


def test_complete_part_answered_416_is_finished_without_body(server, tmp_path):
    data = payload(5000)
    url = server.add('/f.bin', data)
    (tmp_path / 'f.bin.part').write_bytes(data)
    download(url, str(tmp_path / 'f.bin'), md5=md5(data), **FAST)
    assert (tmp_path / 'f.bin').read_bytes() == data
    assert [e['status'] for e in server.log] == [416]


def test_read_timeout_is_retried(server, tmp_path):
    data = payload(10_000)
    url = server.add('/f.bin', data, stall_seconds=1.0, stall_times=1)
    download(url, str(tmp_path / 'f.bin'), md5=md5(data), **dict(FAST, timeout=0.2))
    assert (tmp_path / 'f.bin').read_bytes() == data
    assert [e['status'] for e in server.log] == ['stalled', 200]


@pytest.mark.parametrize('status', [503, 429])
def test_transient_errors_are_retried(server, tmp_path, status):
    data = payload(10_000)
    url = server.add('/f.bin', data, fail_status=status, fail_times=2)
    download(url, str(tmp_path / 'f.bin'), md5=md5(data), **FAST)
    assert (tmp_path / 'f.bin').read_bytes() == data
    assert [e['status'] for e in server.log] == [status, status, 200]


def test_gives_up_after_retries(server, tmp_path):
    url = server.add('/f.bin', b'x', fail_times=100)
    with pytest.raises(DownloadError) as err:
        download(url, str(tmp_path / 'f.bin'), retries=2, **FAST)
    assert len(server.log) == 3
    msg = str(err.value)
    assert url in msg and '503' in msg and '3 attempts' in msg
    assert not (tmp_path / 'f.bin').exists()


def test_404_fails_at_once(server, tmp_path):
    url = server.url + '/missing.bin'
    dest = tmp_path / 'missing.bin'
    with pytest.raises(DownloadError) as err:
        download(url, str(dest), **FAST)
    assert '404' in str(err.value) and url in str(err.value)
    assert len(server.log) == 1
    assert not dest.exists() and not (tmp_path / 'missing.bin.part').exists()


def test_checksum_mismatch_deletes_part(server, tmp_path):
    data = payload(10_000)
    url = server.add('/f.bin', data)
    dest = tmp_path / 'f.bin'
    wrong = '0' * 32
    with pytest.raises(DownloadError) as err:
        download(url, str(dest), md5=wrong, **FAST)
    msg = str(err.value)
    assert wrong in msg and md5(data) in msg and 'deleted' in msg
    assert not dest.exists() and not (tmp_path / 'f.bin.part').exists()


def test_size_mismatch_is_refused(server, tmp_path):
    data = payload(10_000)
    url = server.add('/f.bin', data)
    with pytest.raises(DownloadError, match='expected 9999 bytes, got 10000'):
        download(url, str(tmp_path / 'f.bin'), size=9999, **FAST)
    assert not (tmp_path / 'f.bin').exists() and not (tmp_path / 'f.bin.part').exists()


def test_verified_existing_file_is_not_fetched(server, tmp_path, caplog):
    data = payload(10_000)
    url = server.add('/f.bin', data)
    dest = tmp_path / 'f.bin'
    dest.write_bytes(data)
    with caplog.at_level(logging.INFO, logger='data.download'):
        assert download(url, str(dest), md5=md5(data), **FAST) == str(dest)
        assert download(url, str(dest), **FAST) == str(dest)   # existence is enough
    assert server.log == []
    assert 'skipping' in caplog.text


def test_existing_file_with_wrong_checksum_is_replaced(server, tmp_path):
    data = payload(10_000)
    url = server.add('/f.bin', data)
    dest = tmp_path / 'f.bin'
    dest.write_bytes(b'old version')
    download(url, str(dest), md5=md5(data), **FAST)
    assert dest.read_bytes() == data
    assert len(server.log) == 1


# ---------------------------------------------------------------------------------------------
# safe_extract()


def _tar(path, members):
    """members: (name, data or None, symlink target or None, hardlink target or None)."""
    with tarfile.open(path, 'w:gz') as tf:
        for name, data, sym, hard in members:
            info = tarfile.TarInfo(name)
            if sym is not None:
                info.type, info.linkname = tarfile.SYMTYPE, sym
                tf.addfile(info)
            elif hard is not None:
                info.type, info.linkname = tarfile.LNKTYPE, hard
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _zip(path, members):
    with zipfile.ZipFile(path, 'w') as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize('members', [
    [('ok.txt', b'fine', None, None), ('../evil', b'x', None, None)],
    [('/abs/evil', b'x', None, None)],
    [('link', None, '../../outside', None)],
    [('link', None, '/etc', None)],
    [('hard', None, None, '../outside')],
    # each step looks harmless; together they climb out: l1 -> '.', then l1/l2 -> '..'
    [('l1', None, '.', None), ('l1/l2', None, '..', None)],
    # writing through a link that leads outside
    [('d', None, '..', None), ('d/evil', b'x', None, None)],
], ids=['dotdot', 'absolute', 'symlink-out', 'symlink-abs', 'hardlink-out', 'symlink-chain',
        'write-through-link'])
def test_safe_extract_refuses_unsafe_tar(tmp_path, members):
    archive = _tar(str(tmp_path / 'bad.tar.gz'), members)
    dest = tmp_path / 'out'
    with pytest.raises(DownloadError, match='Refusing to extract'):
        safe_extract(archive, str(dest))
    assert not dest.exists()   # nothing written, not even the folder
    assert sorted(os.listdir(tmp_path)) == ['bad.tar.gz']


@pytest.mark.parametrize('name', ['../evil.txt', '/abs.txt', 'C:/windows.txt',
                                  'a\\..\\..\\evil.txt'])
def test_safe_extract_refuses_unsafe_zip(tmp_path, name):
    archive = _zip(str(tmp_path / 'bad.zip'), [('good.txt', b'ok'), (name, b'x')])
    dest = tmp_path / 'out'
    dest.mkdir()
    with pytest.raises(DownloadError, match='Nothing was extracted'):
        safe_extract(archive, str(dest))
    assert os.listdir(dest) == []


def test_safe_extract_zip(tmp_path):
    archive = _zip(str(tmp_path / 'good.zip'), [
        ('images_background/Greek/character01/0394_01.png', b'png1'),
        ('images_background/Greek/character02/0395_01.png', b'png2'),
        ('top.txt', b'top')])
    dest = tmp_path / 'out'
    (dest / 'images_background' / 'Latin').mkdir(parents=True)   # existing folders are merged
    got = safe_extract(archive, str(dest))
    base = dest / 'images_background' / 'Greek'
    assert (base / 'character01' / '0394_01.png').read_bytes() == b'png1'
    assert (base / 'character02' / '0395_01.png').read_bytes() == b'png2'
    assert (dest / 'top.txt').read_bytes() == b'top'
    assert (dest / 'images_background' / 'Latin').is_dir()
    assert str(base / 'character01' / '0394_01.png') in got
    assert sorted(os.listdir(dest)) == ['images_background', 'top.txt']   # no temp folder left


def test_safe_extract_tar_with_inside_links(tmp_path):
    archive = _tar(str(tmp_path / 'good.tar.gz'), [
        ('pkg/data.txt', b'payload', None, None),
        ('pkg/alias.txt', None, 'data.txt', None),
        ('pkg/sub/up.txt', None, '../data.txt', None),
        ('pkg/hard.txt', None, None, 'pkg/data.txt')])
    dest = tmp_path / 'out'
    safe_extract(archive, str(dest))
    for name in ('data.txt', 'alias.txt', 'sub/up.txt', 'hard.txt'):
        assert (dest / 'pkg' / name).read_bytes() == b'payload'
    assert os.path.islink(dest / 'pkg' / 'alias.txt')
    assert sorted(os.listdir(dest)) == ['pkg']


def test_safe_extract_rejects_non_archive(tmp_path):
    bogus = tmp_path / 'page.zip'
    bogus.write_bytes(b'<html>Too many requests</html>')
    with pytest.raises(DownloadError, match='neither a zip nor a tar'):
        safe_extract(str(bogus), str(tmp_path / 'out'))


def test_uncompressed_tar_ending_in_a_zip_is_extracted_as_a_tar(tmp_path):
    """zipfile.is_zipfile says yes to a plain tar whose last member is a zip (an .npz, as
    the tieredImageNet tar ends): safe_extract must still unpack the tar."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, 'w') as zf:
        zf.writestr('images.npy', b'x' * 100)
    archive = tmp_path / 'data.tar'
    with tarfile.open(archive, 'w') as tf:
        for name, data in (('d/labels.pkl', b'labels'), ('d/test_images.npz', inner.getvalue())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    assert zipfile.is_zipfile(archive)
    out = safe_extract(str(archive), str(tmp_path / 'out'))
    assert sorted(os.path.relpath(p, tmp_path / 'out') for p in out if os.path.isfile(p)) == \
        ['d/labels.pkl', 'd/test_images.npz']
    assert (tmp_path / 'out' / 'd' / 'test_images.npz').read_bytes() == inner.getvalue()
    # and with ../ inside, it is still refused
    with tarfile.open(tmp_path / 'bad.tar', 'w') as tf:
        for name, data in (('../evil', b'x'), ('z.npz', inner.getvalue())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(DownloadError, match='Refusing to extract'):
        safe_extract(str(tmp_path / 'bad.tar'), str(tmp_path / 'out2'))
