"""Stage `text`: language ID and caption filters, before any image is fetched.

Every row gets `lang` and `lang_score` (the report's language histogram covers all candidates);
only rows still `pending` can be dropped here, with the filter's stable reason."""

from manifests import schema
from pipeline.stages.base import PartOutput, Stage


class TextStage(Stage):
    name, inputs = "text", ("balance",)

    def process(self, task, rows) -> PartOutput:
        import pyarrow as pa

        from pipeline.filters.text import filter_captions

        rows = rows.to_pylist()
        verdicts = filter_captions([r["caption"] for r in rows], task.config.text)
        for row, verdict in zip(rows, verdicts, strict=True):
            row["lang"], row["lang_score"] = verdict.lang, verdict.lang_score
            if row["status"] == schema.PENDING and verdict.status != schema.KEPT:
                row["status"], row["error"] = verdict.status, verdict.error
        return PartOutput(pa.Table.from_pylist(rows, schema=schema.SAMPLES))
