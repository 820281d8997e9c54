"""Apache Airflow DAGs that wire the `pipeline` and `trainer` entry points into tasks."""
