"""Start (or resume) a training run from Python: what `trainer run` does, for the demo, the
Airflow DAGs and anyone scripting the trainer, without building an argv.

    summary = launch(resolve_config({"data": DIR, "out": RUN, "samples": 20_000, "resume": True}))
"""

from manifests.storage import location
from trainer.config import ConfigError, TrainConfig, merge_for_resume


def resolve_config(given: dict) -> TrainConfig:
    """TrainConfig from the options given (field names); with `resume` and an existing run, the
    run's stored config is the base and only options that may change on a resume may differ."""
    from trainer import checkpoint
    from trainer.train import read_config

    out = given.get("out")
    if given.get("resume") and out:
        if (location(out) / "config.json").exists():
            given = merge_for_resume(read_config(out)["config"], given)
        elif checkpoint.latest_path(out).exists():
            given = merge_for_resume(checkpoint.load(checkpoint.latest_path(out))["config"], given)
    return TrainConfig.from_dict(given)


def check(cfg: TrainConfig) -> None:
    """Cheap checks before anything starts (and before a Ray job is submitted)."""
    import trainer.models
    from trainer.train import resume_checkpoint

    if not cfg.synthetic and not cfg.data:
        raise ConfigError("--data DIR is required (or --synthetic for generated data)")
    trainer.models.check_model_name(cfg.model)
    if not cfg.resume:
        resume_checkpoint(cfg)  # refuses to overwrite an existing run
    elif not cfg.out:
        raise ConfigError("--out RUN_DIR is required")


def launch(
    cfg: TrainConfig,
    ray_address: str | None = None,
    num_workers: int | None = None,
    use_gpu: bool = False,
) -> dict:
    """Check and run: in this process (or this torchrun rank), or as a Ray Train job with
    `ray_address` / `num_workers`. Returns the run's summary (run_dir, steps, loss, ...)."""
    check(cfg)
    if ray_address or num_workers:
        from trainer.ray_job import run_on_ray

        return run_on_ray(cfg, address=ray_address, num_workers=num_workers or 1, use_gpu=use_gpu)
    from trainer.train import train

    return train(cfg)
