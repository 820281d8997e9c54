"""manifests.storage against a real S3-protocol server on loopback (moto's server mode) and the
local disk: one API, the same answers; bad paths and refused credentials in words."""

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from manifests import storage
from manifests.commit import commit_dataset, committed_files, read_dataset_json
from manifests.layout import DatasetLayout, write_json_atomic, write_parquet_atomic
from manifests.storage import Location, StorageError, location


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return location(tmp_path / "root")
    return location(request.getfixturevalue("s3") + "/root")


def test_the_same_path_api_on_a_local_disk_and_a_bucket(root):
    folder = root / "a" / "b"
    assert not folder.exists() and folder.glob("*.json") == [] and folder.iterdir() == []
    folder.mkdir()
    write_json_atomic({"x": 1}, folder / "one.json")
    (folder / "two.txt").write_text("two")
    with (folder / "three.bin").open("wb") as fh:
        fh.write(b"\x00\x01")
    assert (folder / "one.json").read_text() == '{\n  "x": 1\n}\n'
    assert [p.name for p in folder.glob("*.json")] == ["one.json"]
    assert [p.name for p in folder.iterdir()] == ["one.json", "three.bin", "two.txt"]
    assert folder.is_dir() and (folder / "two.txt").is_file() and not (folder / "nope").exists()
    assert (folder / "three.bin").stat().st_size == 2
    assert [p.name for p in root.rglob("*.txt")] == ["two.txt"]
    assert (folder / "one.json").relative_to(root).as_posix() == "a/b/one.json"
    assert (folder / "one.json").parent == folder and folder.name == "b"
    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    write_parquet_atomic(table, folder / "t.parquet")
    assert storage.read_table(folder / "t.parquet", columns=["b"]).column("b").to_pylist() == [
        "x",
        "y",
        "z",
    ]
    assert storage.parquet_file(folder / "t.parquet").metadata.num_rows == 3
    assert sorted(storage.expand(f"{root}/a/*/*.txt")) == [folder / "two.txt"]
    (folder / "two.txt").unlink()
    assert not (folder / "two.txt").exists()
    folder.rmtree()
    assert not (folder / "one.json").exists()


def test_a_location_pickles_as_its_uri_and_folds_nothing(root):
    import pickle

    loc = root / "x.parquet"
    assert pickle.loads(pickle.dumps(loc)) == loc
    assert str(loc).startswith("s3://") or not loc.uri.startswith("s3:")
    if not loc.is_local:
        with pytest.raises(TypeError, match="not a local path"):
            os.fspath(loc)  # code that would read it as a local file fails loudly


def test_a_failed_write_puts_nothing(root):
    target = root / "half.parquet"
    with pytest.raises(RuntimeError), target.staged() as tmp:
        tmp.write_bytes(b"PAR1 half of a file")
        raise RuntimeError("killed mid-write")
    assert not target.exists() and root.glob("*") == []


def test_duckdb_reads_a_bucket_with_projection_and_filters(root):
    write_parquet_atomic(
        pa.table({"status": ["kept", "duplicate"] * 50, "n": range(100)}), root / "m.parquet"
    )
    con = storage.duckdb_connect(root)
    uri = str(root / "m.parquet").replace("'", "''")
    assert con.execute(
        f"SELECT count(*) FROM read_parquet('{uri}') WHERE status = 'kept'"
    ).fetchone() == (50,)


def test_readers_see_only_the_committed_version(root):
    layout = DatasetLayout(root)
    write_json_atomic({"config": {}, "layout": 2}, layout.run_json)
    rows = pa.table({"uid": ["a"]})
    write_parquet_atomic(rows, layout.samples / "p0.aaaaaaaa.parquet")
    assert committed_files(layout, "samples") == []  # written, not committed: invisible
    commit_dataset(layout, ["manifests/samples/p0.aaaaaaaa.parquet"])
    write_parquet_atomic(rows, layout.samples / "p0.bbbbbbbb.parquet")  # a later attempt
    assert committed_files(layout, "samples") == [layout.samples / "p0.aaaaaaaa.parquet"]
    commit_dataset(layout, ["manifests/samples/p0.bbbbbbbb.parquet"])
    write_parquet_atomic(rows, layout.samples / "p0.cccccccc.parquet")  # killed before commit
    record = commit_dataset(layout, ["manifests/samples/p0.bbbbbbbb.parquet"])
    assert record["version"] == 3
    # Every version's files stay (DIR/versions: `pipeline query --version N`); the uncommitted
    # one is swept.
    names = {p.name for p in layout.samples.iterdir()}
    assert names == {"p0.aaaaaaaa.parquet", "p0.bbbbbbbb.parquet"}
    assert committed_files(layout, "samples") == [layout.samples / "p0.bbbbbbbb.parquet"]
    first = read_dataset_json(layout, version=1)
    assert committed_files(layout, "samples", record=first) == [
        layout.samples / "p0.aaaaaaaa.parquet"
    ]


def test_unknown_schemes_and_empty_buckets_are_errors_in_words():
    with pytest.raises(StorageError, match="unknown scheme ftp://"):
        Location("ftp://host/x")
    with pytest.raises(StorageError, match="no bucket"):
        Location("s3://")


def _query(uri: str, env: dict) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "query", uri, "SELECT 1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**keep, "HOME": "/nonexistent", **env},
    )


@pytest.mark.timeout(120)
def test_refused_keys_missing_permissions_and_no_credentials_say_so():
    from pipeline.testing.s3server import S3Server, user_without_permissions

    with S3Server(open_actions=3) as server:
        env = user_without_permissions(server, "locked")
        cases = {
            "permission denied": env,
            "credentials": {**env, "AWS_ACCESS_KEY_ID": "AKIANOSUCHKEY"},
            "no credentials found": {
                k: v
                for k, v in env.items()
                if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            },
        }
        for says, case_env in cases.items():
            result = _query("s3://locked/ds", case_env)
            assert result.returncode == 2, result.stderr
            assert says in result.stderr and "Traceback" not in result.stderr, result.stderr
