"""Every path a user gives is a URI: a local path, `s3://bucket/key` or `gs://bucket/key`.

One layer serves them all: pyarrow.fs. It is already the layer our Parquet reads and writes go
through (projection and filter pushdown, pre-buffered row groups), it is native C++ for S3 and
GCS (no second HTTP client beside pyarrow's), its S3 client takes credentials from the standard
AWS chains (AWS_* variables, profiles, instance roles) and an S3-compatible store from
`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`; GCS from the standard Google chain. No flags of ours.

`Location` is a path-like value over (filesystem, path) with the part of pathlib's API the
project uses, so code written for a local folder works on a bucket. It pickles as its URI (a
worker rebuilds the filesystem from its own environment). Writes are whole-object puts: an
object store publishes an object only when its upload completes; on a local disk the put writes
a hidden temporary file and renames it. Committing a *set* of files never relies on rename: see
manifests.commit.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import io
import os
import posixpath
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from manifests.config import ConfigError

REMOTE_SCHEMES = {"s3": "s3", "gs": "gs", "gcs": "gs"}
CONNECT_TIMEOUT_S = 10.0  # an endpoint that does not answer fails in bounded time
REQUEST_TIMEOUT_S = 120.0
MAX_ATTEMPTS = 3


class StorageError(ConfigError):
    """A path that cannot be read or written, said in words (never a pyarrow traceback)."""


def split_uri(uri: str) -> tuple[str, str]:
    """(scheme, path): ("", "/abs/path") for local paths, ("s3", "bucket/key") for s3://."""
    text = os.fspath(uri)
    if "://" not in text:
        return "", os.path.normpath(os.path.abspath(os.path.expanduser(text)))
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme == "file":
        return "", os.path.normpath(os.path.abspath(rest))
    if scheme not in REMOTE_SCHEMES:
        known = ", ".join(["local paths", "file://", *(f"{s}://" for s in REMOTE_SCHEMES)])
        raise StorageError(f"{text}: unknown scheme {scheme}://; paths may be {known}")
    rest = rest.strip("/")
    if not rest:
        raise StorageError(f"{text}: no bucket named")
    return REMOTE_SCHEMES[scheme], posixpath.normpath(rest)


@functools.lru_cache(maxsize=16)
def filesystem(scheme: str, bucket: str = ""):
    """The process's one filesystem object per (scheme, bucket): pyarrow's clients are
    thread-safe and keep their connections, so every Location shares them."""
    import pyarrow.fs as pafs

    if scheme == "":
        return pafs.LocalFileSystem()
    if scheme == "s3":
        return _s3(bucket)
    import datetime

    return pafs.GcsFileSystem(retry_time_limit=datetime.timedelta(seconds=60))


_ANONYMOUS: set[str] = set()  # buckets this process reads without credentials (none found)


def _credentials_configured() -> bool:
    """Whether the AWS chain has anything to find: variables, a profile, a web identity, a
    container role, or an instance role (unless instance metadata is turned off)."""
    env = os.environ
    if (
        env.get("AWS_ACCESS_KEY_ID")
        or env.get("AWS_PROFILE")
        or env.get("AWS_WEB_IDENTITY_TOKEN_FILE")
    ):
        return True
    if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or env.get(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI"
    ):
        return True
    files = [env.get("AWS_SHARED_CREDENTIALS_FILE"), env.get("AWS_CONFIG_FILE")]
    files += [os.path.expanduser("~/.aws/credentials"), os.path.expanduser("~/.aws/config")]
    if any(f and os.path.isfile(f) for f in files):
        return True
    return env.get("AWS_EC2_METADATA_DISABLED", "").lower() != "true"


def _s3(bucket: str):
    import pyarrow.fs as pafs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    options = dict(
        connect_timeout=CONNECT_TIMEOUT_S,
        request_timeout=REQUEST_TIMEOUT_S,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=MAX_ATTEMPTS),
        allow_delayed_open=True,  # a small object is one PutObject, not a multipart upload
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if endpoint:  # an S3-compatible store: its address, its scheme, path-style requests
        scheme = "http" if endpoint.startswith("http://") else "https"
        endpoint = endpoint.split("://", 1)[-1]
        options.update(endpoint_override=endpoint, scheme=scheme, force_virtual_addressing=False)
        region = region or "us-east-1"
    elif not region:
        try:
            region = pafs.resolve_s3_region(bucket)
        except OSError as error:
            raise StorageError(f"s3://{bucket}: {_reason(error)}") from None
    if not _credentials_configured():  # a public bucket still reads; anything else says why
        options["anonymous"] = True
        _ANONYMOUS.add(bucket)
    return pafs.S3FileSystem(region=region, **options)


def _reason(error: Exception) -> str:
    """An OSError from pyarrow's object-store clients in a sentence."""
    text = str(error)
    lowered = text.lower()
    if (
        "nosuchbucket" in lowered
        or "no_such_bucket" in lowered
        or "bucket" in lowered
        and ("not found" in lowered or "does not exist" in lowered)
    ):
        return "the bucket does not exist (create it first)"
    if "access_denied" in lowered or "accessdenied" in lowered or "403" in lowered:
        return "permission denied (check the credentials: AWS_* variables or the profile)"
    if "invalidaccesskeyid" in lowered or "signaturedoesnotmatch" in lowered:
        return "the credentials were refused (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
    if "no credentials" in lowered or "credentials" in lowered and "unable" in lowered:
        return "no credentials found (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a profile)"
    if "curlcode" in lowered or "network_connection" in lowered or "timeout" in lowered:
        return "the store does not answer (check AWS_ENDPOINT_URL and the network)"
    return text.splitlines()[0] if text else type(error).__name__


@contextlib.contextmanager
def storage_errors(what) -> Iterator[None]:
    """Turn pyarrow's OSErrors from a remote store into a StorageError naming `what`."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError:
        raise
    except OSError as error:
        if isinstance(what, Location) and what.is_local:
            raise
        reason = _reason(error)
        if isinstance(what, Location) and what.bucket in _ANONYMOUS:
            reason = (
                "no credentials found (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
                f"~/.aws) and the store refused an anonymous request: {reason}"
            )
        raise StorageError(f"{what}: {reason}") from None


@dataclass(frozen=True, eq=False)
class Stat:
    st_size: int
    st_mtime_ns: int

    @property
    def st_mtime(self) -> float:
        return self.st_mtime_ns / 1e9


class Location:
    """A file or folder on the local disk or in an object store (see the module's doc)."""

    __slots__ = ("scheme", "path", "_type")

    def __init__(self, uri="."):
        if isinstance(uri, Location):
            self.scheme, self.path = uri.scheme, uri.path
        else:
            self.scheme, self.path = split_uri(uri)
        self._type = None  # the file type a listing reported (saves a request per entry)

    @classmethod
    def _make(cls, scheme: str, path: str, file_type=None) -> Location:
        loc = object.__new__(cls)
        loc.scheme, loc.path, loc._type = scheme, path, file_type
        return loc

    # --- what it is -----------------------------------------------------------------------
    @property
    def fs(self):
        return filesystem(self.scheme, self.bucket)

    @property
    def bucket(self) -> str:
        return self.path.split("/", 1)[0] if self.scheme else ""

    @property
    def is_local(self) -> bool:
        return self.scheme == ""

    @property
    def uri(self) -> str:
        return self.path if self.is_local else f"{self.scheme}://{self.path}"

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def __fspath__(self) -> str:
        if not self.is_local:
            raise TypeError(f"{self.uri} is not a local path (this code reads local files only)")
        return self.path

    def __reduce__(self):
        return (Location, (self.uri,))

    def __eq__(self, other) -> bool:
        if isinstance(other, str | Path):
            try:
                other = Location(other)
            except StorageError:
                return False
        if not isinstance(other, Location):
            return NotImplemented
        return (self.scheme, self.path) == (other.scheme, other.path)

    def __hash__(self) -> int:
        return hash((self.scheme, self.path))

    def __lt__(self, other: Location) -> bool:
        if not isinstance(other, Location):
            return NotImplemented
        return (self.scheme, self.path) < (other.scheme, other.path)

    # --- pathlib's names --------------------------------------------------------------------
    def __truediv__(self, name) -> Location:
        name = os.fspath(name) if not isinstance(name, str) else name
        return Location._make(self.scheme, posixpath.normpath(posixpath.join(self.path, name)))

    def joinpath(self, *names) -> Location:
        loc = self
        for name in names:
            loc = loc / name
        return loc

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def parent(self) -> Location:
        if self.scheme and "/" not in self.path:
            return self
        return Location._make(self.scheme, posixpath.dirname(self.path))

    def with_name(self, name: str) -> Location:
        return self.parent / name

    def with_suffix(self, suffix: str) -> Location:
        return self.with_name(Path(self.name).with_suffix(suffix).name)

    def relative_to(self, other) -> PurePosixPath:
        return PurePosixPath(posixpath.relpath(self.path, location(other).path))

    def resolve(self) -> Location:
        return Location(os.path.realpath(self.path)) if self.is_local else self

    # --- what is there ------------------------------------------------------------------------
    def info(self):
        with storage_errors(self):
            return self.fs.get_file_info(self.path)

    def _file_type(self):
        return self._type if self._type is not None else self.info().type

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        return self.info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        import pyarrow.fs as pafs

        return self._file_type() == pafs.FileType.Directory

    def is_file(self) -> bool:
        import pyarrow.fs as pafs

        return self._file_type() == pafs.FileType.File

    def stat(self) -> Stat:
        info = self.info()
        if info.size is None:
            raise FileNotFoundError(self.uri)
        return Stat(st_size=info.size, st_mtime_ns=info.mtime_ns or 0)

    def iterdir(self) -> list[Location]:
        """The folder's entries (none if it does not exist), sorted."""
        import pyarrow.fs as pafs

        with storage_errors(self):
            found = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted(Location._make(self.scheme, f.path, f.type) for f in found)

    def glob(self, pattern: str) -> list[Location]:
        """Entries of this folder whose name matches `pattern` (`**/` first: any depth)."""
        import pyarrow.fs as pafs

        recursive = pattern.startswith("**/")
        pattern = pattern.removeprefix("**/")
        with storage_errors(self):
            found = self.fs.get_file_info(
                pafs.FileSelector(self.path, allow_not_found=True, recursive=recursive)
            )
        return sorted(
            Location._make(self.scheme, f.path, f.type)
            for f in found
            if fnmatch.fnmatchcase(posixpath.basename(f.path), pattern)
        )

    def rglob(self, pattern: str) -> list[Location]:
        return self.glob("**/" + pattern)

    # --- reading ----------------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        with storage_errors(self), self.fs.open_input_stream(self.path) as stream:
            return stream.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def open(self, mode: str = "rb", encoding: str | None = None):
        """ "rb": a seekable file; "r": text; "wb"/"w": a whole-object put on close."""
        if mode in ("rb", "r"):
            with storage_errors(self):
                raw = self.fs.open_input_file(self.path)
            return raw if mode == "rb" else io.TextIOWrapper(raw, encoding=encoding or "utf-8")
        if mode in ("wb", "w"):
            return _PutOnClose(self, text=mode == "w", encoding=encoding or "utf-8")
        raise ValueError(f"mode {mode!r}: a Location opens as rb, r, wb or w")

    # --- writing ----------------------------------------------------------------------------
    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        """A folder on a local disk; nothing on an object store (keys need no folders)."""
        if self.is_local:
            Path(self.path).mkdir(parents=parents, exist_ok=exist_ok)

    def write_bytes(self, data: bytes) -> None:
        with self.atomic_local() as tmp:
            if tmp is not None:
                tmp.write_bytes(data)
                return
            with storage_errors(self), self.fs.open_output_stream(self.path) as out:
                out.write(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def upload(self, local_file) -> None:
        """Put a finished local file here whole (object stores: one upload)."""
        import shutil

        with self.atomic_local() as tmp:
            if tmp is not None:
                shutil.copyfile(local_file, tmp)
                return
            with (
                storage_errors(self),
                open(local_file, "rb") as source,
                self.fs.open_output_stream(self.path) as out,
            ):
                shutil.copyfileobj(source, out, 8 << 20)

    @contextlib.contextmanager
    def atomic_local(self) -> Iterator[Path | None]:
        """On a local disk: a hidden temporary path beside this one, renamed onto it on a
        clean exit and removed on an error. None on an object store (its puts are whole)."""
        if not self.is_local:
            yield None
            return
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            yield tmp
            if tmp.exists():
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def staged(self) -> Iterator[Path]:
        """A local file to write this object's content into; put here whole on a clean exit.
        (Writers that need a real file, such as tar or Parquet writers, write there.)"""
        if self.is_local:
            with self.atomic_local() as tmp:
                yield tmp
            return
        with tempfile.TemporaryDirectory(prefix="clipengine-put-") as folder:
            tmp = Path(folder) / self.name
            yield tmp
            self.upload(tmp)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            with storage_errors(self):
                self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        """Delete this folder and everything under it (nothing if it does not exist)."""
        if self.is_dir():
            with storage_errors(self):
                self.fs.delete_dir(self.path)


class _PutOnClose(io.BytesIO):
    """Bytes (or text) gathered in memory and put whole when closed without an error."""

    def __init__(self, target: Location, text: bool, encoding: str):
        super().__init__()
        self.target, self.text, self.encoding = target, text, encoding

    def write(self, data) -> int:
        return super().write(data.encode(self.encoding) if isinstance(data, str) else data)

    def close(self) -> None:
        if not self.closed and not getattr(self, "failed", False):
            self.target.write_bytes(self.getvalue())
        super().close()

    def __exit__(self, kind, value, traceback):
        self.failed = kind is not None  # an error inside `with`: nothing is put
        self.close()
        return False


def location(path) -> Location:
    """A Location for a local path, a file:// URI, an s3:// or a gs:// URI."""
    return path if isinstance(path, Location) else Location(path)


def readable(source):
    """What PIL, torch and the like open: a local path as a str, a remote file's bytes as a
    BytesIO; anything else (bytes, file objects) as it is."""
    if isinstance(source, Location):
        return source.path if source.is_local else io.BytesIO(source.read_bytes())
    return source


def is_remote(path) -> bool:
    return "://" in os.fspath(path) if not isinstance(path, Location) else not path.is_local


def expand(pattern) -> list[Location]:
    """A path or glob (`*`, `?`, `[...]` in its last parts) as the files it names, sorted."""
    text = str(pattern)
    if not any(c in text for c in "*?["):
        return [location(text)]
    head, parts = location(text), []
    while any(c in head.name for c in "*?["):
        parts.insert(0, head.name)
        head = head.parent
    found, deep = [head], False
    for part in parts:
        if part == "**":
            deep = True
            continue
        pattern = ("**/" if deep else "") + part
        found, deep = [child for folder in found for child in folder.glob(pattern)], False
    return sorted(set(found))


def local_scratch(name: str) -> Path:
    """A local folder for spill and staging files of this process (never in the dataset)."""
    folder = Path(tempfile.gettempdir()) / f"clipengine-{os.getpid()}" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def duckdb_connect(root=None):
    """A DuckDB connection that reads local paths and, when `root` is in an object store, that
    store's URIs: DuckDB's own Parquet reader (projection and filter pushdown, range reads) over
    this module's pyarrow filesystem, registered through fsspec's Arrow adapter (DuckDB's httpfs
    extension would be a download at run time)."""
    import duckdb

    con = duckdb.connect(":memory:")
    # Never fetch an extension at run time (an s3:// path would make DuckDB download httpfs).
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    if root is not None and not location(root).is_local:
        con.register_filesystem(_fsspec_view(location(root)))
        # DuckDB's external file cache reads a whole remote file to cache it: with it off, a
        # query fetches the footer and the column chunks it needs, nothing else.
        con.execute("SET enable_external_file_cache = false")
    return con


def _fsspec_view(root: Location):
    from fsspec.implementations.arrow import ArrowFSWrapper

    protocols = {"s3": ("s3", "s3a"), "gs": ("gs", "gcs")}[root.scheme]

    class StoreView(ArrowFSWrapper):
        protocol = protocols

        def info(self, path, **kwargs):
            # DuckDB asks for a file's size many times; data files are never rewritten in
            # place (manifests.commit), so one answer per connection holds.
            key = self._strip_protocol(path)
            if key not in self._infos:
                self._infos[key] = super().info(path, **kwargs)
            return self._infos[key]

    view = StoreView(root.fs, skip_instance_cache=True)
    view._infos = {}
    return view


def read_table(path, columns=None, filters=None, schema=None, **options):
    """pyarrow.parquet.read_table of a file or folder on any store (only `columns` are
    fetched, and with `filters` only the row groups that can match)."""
    import pyarrow.parquet as pq

    loc = location(path)
    with storage_errors(loc):
        return pq.read_table(
            loc.path, columns=columns, filters=filters, schema=schema, filesystem=loc.fs, **options
        )


def parquet_file(path, **options):
    """pyarrow.parquet.ParquetFile on any store (a local file is memory-mapped as before)."""
    import pyarrow.parquet as pq

    loc = location(path)
    if loc.is_local:
        return pq.ParquetFile(loc.path, **options)
    return pq.ParquetFile(loc.open("rb"), **options)


def parquet_dataset(paths, **options):
    """pyarrow.dataset.dataset over files (or one folder) of one store."""
    import pyarrow.dataset as ds

    locs = [location(p) for p in paths] if isinstance(paths, list | tuple) else [location(paths)]
    if not locs:
        return ds.dataset([], **options)
    source = [loc.path for loc in locs] if isinstance(paths, list | tuple) else locs[0].path
    with storage_errors(locs[0]):
        return ds.dataset(source, filesystem=locs[0].fs, **options)


def open_input(path, compression: str | None = "detect"):
    """A sequential input stream of a file on any store, decompressed by its extension."""
    loc = location(path)
    with storage_errors(loc):
        return loc.fs.open_input_stream(loc.path, compression=compression)


@contextlib.contextmanager
def local_copy(path) -> Iterator[Path]:
    """A local path with the file's bytes: the file itself when it is local, else a download
    into this process's scratch folder, removed after (for readers that need a real file)."""
    loc = location(path)
    if loc.is_local:
        yield Path(loc.path)
        return
    import shutil

    with tempfile.TemporaryDirectory(dir=local_scratch("inputs")) as folder:
        target = Path(folder) / loc.name
        with (
            storage_errors(loc),
            loc.fs.open_input_stream(loc.path) as src,
            open(target, "wb") as dst,
        ):
            shutil.copyfileobj(src, dst, 8 << 20)
        yield target


def upload_tree(local_dir, target) -> None:
    """Put every file under a local folder at the same relative path under `target`."""
    local_dir, target = Path(local_dir), location(target)
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        (target / path.relative_to(local_dir).as_posix()).upload(path)


def cached_local(path) -> Path:
    """A local path holding the file's bytes: the file itself when it is local; for a remote
    file, a copy in this machine's cache, fetched once per version (its URI, size and mtime)
    and shared by the processes that need it (a model every worker loads)."""
    import hashlib
    import shutil

    loc = location(path)
    if loc.is_local:
        return Path(loc.path)
    stat = loc.stat()
    key = hashlib.sha256(f"{loc.uri}|{stat.st_size}|{stat.st_mtime}".encode()).hexdigest()[:20]
    target = Path(tempfile.gettempdir()) / "clipengine-cache" / key / loc.name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
        with (
            storage_errors(loc),
            loc.fs.open_input_stream(loc.path) as src,
            open(partial, "wb") as dst,
        ):
            shutil.copyfileobj(src, dst, 8 << 20)
        os.replace(partial, target)
    return target
