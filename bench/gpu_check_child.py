"""One run of the GPU check in its own process: `gpu_check_child.py KIND RESULT -- ARGV`.

KIND is `openclip` (open_clip_train.main.main(ARGV), after registering the trainer's tiny model
configs with open_clip.add_model_config, as a user of a custom config does), `trainer`
(trainer.cli.main), `pipeline` (pipeline.cli.main) or `call` (ARGV: MODULE:FUNCTION and a JSON
object of keyword arguments; the dict it returns goes into RESULT). A process per run keeps each
run's CUDA context, compile caches and peak-memory counter its own, and a crash (or a CUDA error,
which poisons the context) ends that run only. RESULT gets JSON: exit status, error, peak memory
(GPU: torch.cuda.max_memory_allocated; CPU: the process's peak RSS) and wall seconds.
"""

import json
import resource
import sys
import time
import traceback


def _run(kind: str, argv: list[str], record: dict) -> int:
    if kind == "call":
        import importlib

        module, _, function = argv[0].partition(":")
        record.update(getattr(importlib.import_module(module), function)(**json.loads(argv[1])))
        return 0
    if kind == "openclip":
        from open_clip_train.main import main

        import trainer.models  # noqa: F401 - registers clip-tiny and clip-nano with open_clip

        status = main(argv)  # -1 where it refuses (an existing experiment, bad options)
        return 0 if status in (None, 0) else 1
    if kind == "trainer":
        from trainer.cli import main

        return main(argv)
    if kind == "pipeline":
        from pipeline.cli import main

        return main(argv)
    raise SystemExit(f"unknown kind {kind!r}")


def _peak() -> dict:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return {"peak_bytes": torch.cuda.max_memory_allocated(), "peak_of": "GPU"}
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return {"peak_bytes": rss_kib * 1024, "peak_of": "RSS"}


def main() -> int:
    kind, result, sep, *argv = sys.argv[1:]
    if sep != "--":
        raise SystemExit("usage: gpu_check_child.py KIND RESULT -- ARGV")
    started, rc, error, record = time.perf_counter(), 1, None, {}
    try:
        rc = _run(kind, argv, record) or 0
    except SystemExit as exc:  # argparse and the CLIs' own exits
        rc = exc.code if isinstance(exc.code, int) else 1
        error = None if rc == 0 else f"exit {exc.code}"
    except BaseException as exc:  # noqa: BLE001 - reported in the table, the other runs go on
        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    record.update(rc=rc, error=error, wall_s=time.perf_counter() - started, **_peak())
    with open(result, "w") as fh:
        json.dump(record, fh)
    return 0 if rc == 0 and error is None else 1


if __name__ == "__main__":
    sys.exit(main())
