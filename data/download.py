"""Resumable, verified downloads and safe archive extraction.

The originals fetch their data with a bare `requests.get(...).iter_content()` loop
(metadrop's get_data.py): an interrupted transfer leaves a truncated file in place that the
readers later fail on. Here a file reaches its final name only once it is complete and
verified, an interrupted transfer resumes from the bytes already on disk, and transient
server or network failures are retried with exponential backoff.
"""
import contextlib
import hashlib
import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile

import requests
from tqdm import tqdm

log = logging.getLogger(__name__)

# Answers that say "try again later" rather than "this will never work".
_RETRY_STATUSES = frozenset({408, 429})
_NETWORK_ERRORS = (requests.exceptions.ConnectionError,
                   requests.exceptions.ChunkedEncodingError,
                   requests.exceptions.Timeout)
_CONTENT_RANGE = re.compile(r'bytes\s+(\d+)-(\d+)/(\d+|\*)', re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r'bytes\s+\*/(\d+)', re.IGNORECASE)
# Raised by tarfile's 'data' filter (Python >= 3.11.4 / 3.12); () matches nothing elsewhere.
_FILTER_ERROR = getattr(tarfile, 'FilterError', ())


class DownloadError(Exception):
    """A download or extraction failed; the message tells the user what happened and what to do.

    `kind` lets callers add advice: 'http' (a non-retryable status), 'network' (retries
    exhausted), 'verify' (size or checksum mismatch), 'unsafe' (archive refused), 'io'
    (local disk), 'archive' (not a readable archive), or None.
    """

    def __init__(self, message, kind=None):
        super().__init__(message)
        self.kind = kind


class _Retryable(Exception):
    """An attempt failed in a way that a later attempt may not."""


def _human(n):
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if n < 1024 or unit == 'GiB':
            return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
        n /= 1024
    return f'{n} B'


def _digest(path, algorithm):
    h = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def _verify(path, md5=None, sha256=None, size=None):
    """Returns None if `path` passes every given check, else a sentence saying which failed."""
    actual = os.path.getsize(path)
    if size is not None and actual != size:
        return f'its size is wrong (expected {size} bytes, got {actual})'
    for algorithm, expected in (('md5', md5), ('sha256', sha256)):
        if expected:
            got = _digest(path, algorithm)
            if got.lower() != expected.lower():
                return f'its {algorithm} checksum is wrong (expected {expected.lower()}, got {got})'
    return None


def _what_was_checked(md5, sha256, size):
    if md5 or sha256:
        return 'its checksum matches'
    if size is not None:
        return 'its size matches'
    return 'no checksum is known, so it is taken as is'


def download(url, dest, md5=None, sha256=None, size=None, retries=5, backoff=1.0,
             chunk_size=1 << 16, timeout=30, session=None, progress=True):
    """Downloads `url` to `dest` and returns `dest`.

    The body is streamed into `dest + '.part'`; an existing .part is resumed with a Range
    request (or restarted if the server ignores ranges). Network failures, 5xx, 408 and 429
    are retried up to `retries` times, sleeping `backoff * 2**attempt` seconds; the count
    starts again whenever an attempt got further than any before it, so a long transfer over
    a flaky link keeps going as long as it makes progress. Other 4xx fail at once.

    The finished file is checked against `size` (or the length the server announced) and
    `md5`/`sha256` when given, then moved to `dest` atomically. If `dest` already exists
    and passes those checks, nothing is fetched.

    Raises:
      DownloadError: with a message naming the URL and what to do next.
    """
    dest = os.fspath(dest)
    name = os.path.basename(dest)
    if os.path.exists(dest):
        problem = _verify(dest, md5, sha256, size)
        if problem is None:
            log.info('%s already exists and %s; skipping the download.',
                     dest, _what_was_checked(md5, sha256, size))
            return dest
        log.warning('%s already exists but %s; downloading it again.', dest, problem)

    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = dest + '.part'
    own_session = session is None
    if own_session:
        session = requests.Session()
    try:
        total = _fetch(url, part, name, session, retries, backoff, chunk_size, timeout, progress)
    finally:
        if own_session:
            session.close()

    problem = _verify(part, md5, sha256, size if size is not None else total)
    if problem is not None:
        os.remove(part)
        raise DownloadError(
            f'The file downloaded from {url} is not the expected one: {problem}. '
            f'The partial file {part} was deleted, so rerunning starts the download over. '
            'If this happens again the server (or a mirror) is serving a different or '
            'corrupted file.', kind='verify')
    os.replace(part, dest)
    log.info('Saved %s (%s).', dest, _human(os.path.getsize(dest)))
    return dest


def _fetch(url, part, name, session, retries, backoff, chunk_size, timeout, progress):
    """Fills `part` with the whole body of `url`; returns the full length if the server said it."""
    failures = attempts = 0
    furthest = os.path.getsize(part) if os.path.exists(part) else 0
    while True:
        attempts += 1
        try:
            return _attempt(url, part, name, session, chunk_size, timeout, progress)
        except (_Retryable,) + _NETWORK_ERRORS as exc:
            held = os.path.getsize(part) if os.path.exists(part) else 0
            if held > furthest:
                furthest, failures = held, 0
            if failures >= retries:
                kept = (f'The {held} bytes received so far are kept in {part}; rerun the same '
                        'command to resume from there. ' if held else '')
                plural = 's' if attempts > 1 else ''
                raise DownloadError(
                    f'Downloading {url} failed after {attempts} attempt{plural}; the last error '
                    f'was: {_describe(exc)}. {kept}Check your network connection, wait a while if '
                    'the server is overloaded, or fetch the file from a mirror.',
                    kind='network') from None
            delay = backoff * 2 ** failures
            failures += 1
            log.warning('%s: %s; retrying in %.1f s (retry %d of %d).',
                        name, _describe(exc), delay, failures, retries)
            time.sleep(delay)


def _describe(exc):
    if isinstance(exc, _Retryable):
        return str(exc)
    if isinstance(exc, requests.exceptions.Timeout):
        return f'the server did not answer within the timeout ({type(exc).__name__})'
    return f'the connection failed ({type(exc).__name__}: {exc})'


def _attempt(url, part, name, session, chunk_size, timeout, progress):
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    # identity: Content-Length must count the bytes we write, not a compressed form of them.
    headers = {'Accept-Encoding': 'identity'}
    if offset:
        headers['Range'] = f'bytes={offset}-'
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=timeout)
    except _NETWORK_ERRORS:
        raise  # retried by the caller
    except requests.exceptions.RequestException as exc:  # bad URL, redirect loop, ...
        raise DownloadError(f'Cannot download {url}: {type(exc).__name__}: {exc}. '
                            'Check that the URL is correct.', kind='http') from None
    with resp:
        status = resp.status_code
        if status == 416 and offset:
            # Asked for bytes past the end: the .part is either complete or not this file.
            m = _UNSATISFIED_RANGE.match(resp.headers.get('Content-Range', ''))
            if m and int(m.group(1)) == offset:
                return offset
            os.remove(part)
            raise _Retryable(f'the partial file {part} does not fit the remote file; '
                             'starting over')
        if status >= 500 or status in _RETRY_STATUSES:
            raise _Retryable(f'the server answered HTTP {status} ({resp.reason})')
        if status not in (200, 206):
            raise DownloadError(
                f'Downloading {url} failed: the server answered HTTP {status} ({resp.reason}). '
                + ('The file is not (or no longer) at this address; check the URL or use a '
                   'mirror.' if status in (403, 404, 410) else
                   'Check the URL, or try again later or from a mirror.'), kind='http')

        if status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get('Content-Range', ''))
            if not m or int(m.group(1)) != offset:
                os.remove(part)
                raise _Retryable('the server sent a different byte range than requested; '
                                 'starting over')
            start, end = int(m.group(1)), int(m.group(2))
            total = None if m.group(3) == '*' else int(m.group(3))
            expected_body, mode = end - start + 1, 'ab'
        else:
            if offset:
                log.info('%s: the server does not support resuming; starting over.', name)
            offset, mode = 0, 'wb'
            length = resp.headers.get('Content-Length')
            total = int(length) if length and length.isdigit() else None
            expected_body = total

        received = 0
        try:
            with open(part, mode) as f, tqdm(total=total, initial=offset, unit='B',
                                             unit_scale=True, unit_divisor=1024, desc=name,
                                             disable=not progress, dynamic_ncols=True) as bar:
                for chunk in resp.iter_content(chunk_size):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except requests.exceptions.RequestException:
            raise  # a network failure (these subclass OSError too); retried by the caller
        except OSError as exc:
            raise DownloadError(
                f'Cannot write {part} while downloading {url}: {exc}. Free some disk space or '
                'choose another data root, then rerun to resume.', kind='io') from None
        if expected_body is not None and received < expected_body:
            raise _Retryable(f'the connection closed after {offset + received} of '
                             f'{offset + expected_body} bytes')
        return total


# ---------------------------------------------------------------------------------------------
# Archive extraction


def _parts(name):
    # Backslashes count as separators too: an archive made on Windows may use them.
    return [p for p in re.split(r'[\\/]+', name) if p not in ('', '.')]


def _is_absolute(name):
    return name.startswith(('/', '\\')) or re.match(r'^[A-Za-z]:', name) is not None


def _unsafe_name(name):
    if name.startswith(('/', '\\')):
        return 'it is an absolute path'
    if re.match(r'^[A-Za-z]:', name):
        return 'it starts with a drive letter'
    if '..' in _parts(name):
        return "it contains a '..' component"
    return None


def _resolve(parts, symlinks, depth=0):
    """Resolves a path (relative to the archive root) through the archive's own symlinks.

    Returns the resolved components, or None if the path leaves the root (or loops)."""
    resolved = []
    for comp in parts:
        if comp == '..':
            if not resolved:
                return None
            resolved.pop()
            continue
        resolved.append(comp)
        target = symlinks.get('/'.join(resolved))
        if target is not None:
            if depth > 32 or _is_absolute(target):
                return None
            resolved = _resolve(resolved[:-1] + _parts(target), symlinks, depth + 1)
            if resolved is None:
                return None
    return resolved


def check_members(members, archive_path):
    """members: (name, kind, linkname) with kind in file/dir/symlink/hardlink/other."""
    symlinks = {'/'.join(_parts(n)): target for n, kind, target in members if kind == 'symlink'}
    for name, kind, target in members:
        reason = _unsafe_name(name)
        parts = _parts(name)
        if reason is None and parts and _resolve(parts[:-1], symlinks) is None:
            reason = 'it is written through a symlink that points outside the destination'
        if reason is None and kind == 'symlink':
            if _is_absolute(target) or _resolve(parts[:-1] + _parts(target), symlinks) is None:
                reason = f'it is a symlink to {target!r}, outside the destination'
        if reason is None and kind == 'hardlink':
            if _unsafe_name(target) or _resolve(_parts(target), symlinks) is None:
                reason = f'it is a hard link to {target!r}, outside the destination'
        if reason is None and kind == 'other':
            reason = 'it is a device, fifo or other special file'
        if reason is not None:
            raise DownloadError(
                f'Refusing to extract {archive_path}: member {name!r} is unsafe because {reason}. '
                'Nothing was extracted. The archive is corrupted or malicious; delete it and '
                'download it again from a trusted source.', kind='unsafe')


def zip_members(zf):
    out = []
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if info.is_dir():
            out.append((info.filename, 'dir', None))
        elif stat.S_ISLNK(mode):
            # zipfile writes a link as a small file holding its target; check the target anyway.
            out.append((info.filename, 'symlink', zf.read(info).decode('utf-8', 'replace')))
        else:
            out.append((info.filename, 'file', None))
    return out


def _tar_members(tf):
    out = []
    for m in tf.getmembers():
        kind = ('dir' if m.isdir() else 'file' if m.isfile() else 'symlink' if m.issym()
                else 'hardlink' if m.islnk() else 'other')
        out.append((m.name, kind, m.linkname if kind in ('symlink', 'hardlink') else None))
    return out


def _move_into(src, dst):
    """Renames src to dst; merges into an existing directory the way unzip/tar overwrite."""
    if not os.path.lexists(dst):
        os.replace(src, dst)
    elif os.path.isdir(src) and not os.path.islink(src) and os.path.isdir(dst) \
            and not os.path.islink(dst):
        for child in os.listdir(src):
            _move_into(os.path.join(src, child), os.path.join(dst, child))
        os.rmdir(src)
    elif os.path.isdir(dst) and not os.path.islink(dst):
        raise DownloadError(f'Cannot extract over {dst}: it is a directory but the archive '
                            'holds a file there. Move it away and rerun.', kind='io')
    else:
        os.replace(src, dst)


def safe_extract(archive_path, dest_dir):
    """Extracts a zip or tar(.gz/.bz2/.xz) archive into dest_dir; returns the extracted paths.

    Every member is checked before anything is written: absolute paths, drive letters, '..'
    components and links leading outside dest_dir make the whole archive refused with a
    DownloadError. The archive is unpacked into a temporary folder inside dest_dir and
    then renamed into place, so an interrupted extraction never leaves a half-written tree
    under the final names. Existing files are overwritten and existing folders merged.
    """
    archive_path = os.fspath(archive_path)
    dest_dir = os.fspath(dest_dir)
    with open(archive_path, 'rb') as f:
        head = f.read(4)
    # A zip starts with a local-file (or empty-archive) signature. zipfile.is_zipfile alone
    # is not enough: it also accepts a tar whose last member is a zip (an .npz), whose
    # end-of-directory record sits near the end of the tar.
    if head in (b'PK\x03\x04', b'PK\x05\x06'):
        opener, kind = zipfile.ZipFile, 'zip'
    elif tarfile.is_tarfile(archive_path):
        opener, kind = (lambda p: tarfile.open(p, 'r:*')), 'tar'
    else:
        raise DownloadError(f'{archive_path} is neither a zip nor a tar archive (it may be '
                            'truncated or an HTML error page); delete it and download it '
                            'again.', kind='archive')
    try:
        with opener(archive_path) as archive:
            members = zip_members(archive) if kind == 'zip' else _tar_members(archive)
            check_members(members, archive_path)
            os.makedirs(dest_dir, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix='.extracting-', dir=dest_dir)
            try:
                if kind == 'zip':
                    archive.extractall(tmp)
                elif hasattr(tarfile, 'data_filter'):
                    # Second line of defence, checked against the real file system.
                    archive.extractall(tmp, filter='data')
                else:  # pragma: no cover - Python without PEP 706
                    archive.extractall(tmp)
                for top in sorted(os.listdir(tmp)):
                    _move_into(os.path.join(tmp, top), os.path.join(dest_dir, top))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except _FILTER_ERROR as exc:
        raise DownloadError(f'Refusing to extract {archive_path}: {exc}. Nothing was extracted; '
                            'delete the archive and download it again from a trusted '
                            'source.', kind='unsafe') from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DownloadError(f'{archive_path} is corrupted ({type(exc).__name__}: {exc}); delete '
                            'it and download it again.', kind='archive') from None
    extracted, seen = [], set()
    for name, _, _ in members:
        rel = posixpath.join(*_parts(name)) if _parts(name) else ''
        if rel and rel not in seen:
            seen.add(rel)
            extracted.append(os.path.join(dest_dir, *rel.split('/')))
    return extracted


@contextlib.contextmanager
def preprocessing(what, dataset_dir):
    """get_data's preprocessing of `what` in dataset_dir: a reader's DatasetError or a disk
    error inside becomes the one DownloadError get_data reports."""
    from .base import DatasetError
    try:
        yield
    except (DatasetError, OSError) as exc:
        raise DownloadError(f'Preprocessing {what} in {dataset_dir} failed: {exc}') from None


def check_npy(path, what, problem_of):
    """Deletes `path` and raises DownloadError unless it is a plain npy array for which
    problem_of(array) returns None (else the reason); the array is only memory-mapped."""
    import numpy as np
    try:
        arr = np.load(path, mmap_mode='r', allow_pickle=False)
        if not isinstance(arr, np.ndarray):  # an .npz archive
            arr.close()
            raise ValueError('it is an .npz archive, not a single array')
        problem = problem_of(arr)
        del arr
    except (ValueError, OSError, EOFError) as exc:
        problem = f'numpy cannot read it as an array ({exc})'
    if problem is not None:
        os.remove(path)
        raise DownloadError(f'{path} is not a usable {what}: {problem}. It was deleted; rerun '
                            'to download it again, and if this repeats the source is serving a '
                            'different file.')
