"""Params the DAGs share: where a build reads from and how it runs (the DAG files import these;
the tasks read them through dags._common.build_config)."""

from airflow.sdk import Param

STRINGS = {"type": "array", "items": {"type": "string"}}


def build_source_params() -> dict:
    """Fresh Param objects (each DAG gets its own) for BuildConfig's source and execution."""
    return {
        "query_list": Param(None, type=["null", "string"], description="query list file"),
        "seeds": Param([], **STRINGS, description="seed URLs to crawl"),
        "warc": Param([], **STRINGS, description="WARC/WAT files or globs"),
        "url_list": Param(None, type=["null", "string"], description="URL list file"),
        "allow_network": Param([], **STRINGS, description="extra allowed CIDRs"),
        "executor": Param("auto", enum=["auto", "ray", "local"]),
        "ray_address": Param(None, type=["null", "string"], description="Ray cluster address"),
        "build_options": Param({}, type="object", description="other BuildConfig fields"),
    }
