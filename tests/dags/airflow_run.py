"""Run in a subprocess by the DAG tests: load dags/ into a DagBag and `dag.test()` DAG runs with
a SQLite metadata database, then print one JSON line with what happened.

    python -m tests.dags.airflow_run SPEC.json

SPEC: {"runs": [{"dag_id": ..., "conf": {...}, "mark": URL}, ...]}; each run first requests its
"mark" URL, so the test site's request log shows where each run begins. The Airflow environment (AIRFLOW_HOME,
the SQLite URL, the dags folder) comes from the caller, and is set before Airflow is imported,
as Airflow reads its configuration once at import. An audit hook refuses (and records) every
connection and name lookup outside loopback, so a test fails if Airflow or a task tries to
reach the network.
"""

import contextlib
import ipaddress
import json
import socket
import sys
from pathlib import Path

RESULT_PREFIX = "AIRFLOW_RUN_RESULT "
HEAVY = ("trainer", "torch", "ray", "duckdb", "pyarrow", "manifests")
# The one part of the project a DAG file reads at parse time: the stage list, made to import
# nothing else (pipeline.stages.registry names the stage classes by module path).
LIGHT = {"pipeline", "pipeline.stages", "pipeline.stages.registry"}
_refused: list[str] = []


def _is_loopback(host) -> bool:
    if host is None or host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _loopback_only(event: str, args: tuple) -> None:
    if event == "socket.connect":
        sock, address = args
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or _is_loopback(address[0]):
            return
        host = address[0]
    elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
        host = args[0]
        if isinstance(host, bytes):
            host = host.decode()
        if _is_loopback(host):
            return
    else:
        return
    _refused.append(f"{event} {host}")
    raise OSError(f"test guard: {event} to {host} refused (loopback only)")


def _task_states(dag_id: str, run_id: str) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id).all()
        return {ti.task_id: str(ti.state) for ti in rows}


def _return_values(dag_id: str, run_id: str) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag_id, run_id=run_id, key="return_value")
        return {x.task_id: x.value for x in rows}


def _mark(url: str) -> None:
    """Ask the test site for a path it does not serve, so its request log shows where each run
    begins."""
    import urllib.error
    import urllib.request

    with contextlib.suppress(urllib.error.HTTPError):
        urllib.request.urlopen(url, timeout=5).close()


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    sys.addaudithook(_loopback_only)
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    db.initdb()
    bag = DagBag()
    result = {
        "import_errors": dict(bag.import_errors),
        "dags": {d: [t.task_id for t in dag.topological_sort()] for d, dag in bag.dags.items()},
        "upstream": {
            d: {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}
            for d, dag in bag.dags.items()
        },
        "heavy_after_parse": sorted(
            [m for m in HEAVY if m in sys.modules]
            + [m for m in sys.modules if m.startswith("pipeline") and m not in LIGHT]
        ),
        "runs": [],
    }
    for run in spec.get("runs", []):
        if run.get("mark"):
            _mark(run["mark"])
        dr = bag.dags[run["dag_id"]].test(run_conf=run["conf"])
        result["runs"].append(
            {
                "dag_id": run["dag_id"],
                "state": str(dr.state),
                "tasks": _task_states(run["dag_id"], dr.run_id),
                "returned": _return_values(run["dag_id"], dr.run_id),
            }
        )
    result["refused"] = _refused
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
