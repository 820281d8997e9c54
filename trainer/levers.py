"""Speed levers of the training step that change how the model runs, not what it computes:
`--precision fp8` (torchao float8 matmuls), `--channels-last` and `--compile` / `--compile-mode`.

`check` turns a lever that cannot work on this device into a ConfigError before anything is
built; `prepare` applies the model-side levers after the model is on its device (and before DDP
and torch.compile wrap it); `compile_model` wraps it last.
"""

import logging

from manifests.config import ConfigError

log = logging.getLogger(__name__)

FP8_MIN_CAPABILITY = (8, 9)  # float8 tensor cores: Ada (8.9) and Hopper (9.0) onwards
FP8_MULTIPLE = 16  # float8 matmuls (torch._scaled_mm) need both dims divisible by 16


def check(cfg, device: str) -> None:
    """A ConfigError saying why a requested lever cannot run on `device`."""
    if cfg.precision == "fp8":
        _check_fp8(device)
    if cfg.compile and cfg.compile_mode == "reduce-overhead" and not device.startswith("cuda"):
        # CUDA graphs are all this mode adds; on a CPU it would silently be `default`
        raise ConfigError(
            "--compile-mode reduce-overhead records CUDA graphs and needs a CUDA device "
            f"(this run is on {device}); use --compile-mode default"
        )


def _check_fp8(device: str) -> None:
    import torch

    if not device.startswith("cuda"):
        raise ConfigError(
            f"--precision fp8 needs a CUDA GPU with compute capability 8.9+ (this run is on "
            f"{device}; on a CPU torchao only emulates float8, slower than fp32)"
        )
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        raise ConfigError(
            f"--precision fp8 needs compute capability 8.9+ (Ada, Hopper); "
            f"{torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}"
        )
    try:
        import torchao.float8  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"--precision fp8 needs torchao ({exc}): pip install 'clipengine[fp8]' "
            "(or pip install torchao)"
        ) from exc


def fp8_filter(model):
    """The module filter for torchao: Linear layers whose matmuls float8 can take (both dims
    multiples of 16), less the out_proj of nn.MultiheadAttention, which calls its weight through
    F.multi_head_attention_forward and would never run the converted forward."""
    import torch

    inside_mha = {
        f"{name}.out_proj" if name else "out_proj"
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.MultiheadAttention)
    }

    def keep(module, fqn: str) -> bool:
        return (
            isinstance(module, torch.nn.Linear)
            and fqn not in inside_mha
            and module.in_features % FP8_MULTIPLE == 0
            and module.out_features % FP8_MULTIPLE == 0
        )

    return keep


def convert_fp8(model) -> list[str]:
    """Swap the eligible Linear layers for torchao's Float8Linear (tensorwise dynamic scaling, the
    recipe that works with DDP); returns the names converted. The parameters and state_dict keys
    stay those of nn.Linear, so checkpoints load into plain open_clip models."""
    from torchao.float8 import convert_to_float8_training

    keep = fp8_filter(model)
    names = [n for n, m in model.named_modules() if keep(m, n)]
    convert_to_float8_training(model, module_filter_fn=keep)
    return names


def prepare(model, cfg):
    """Apply --channels-last and --precision fp8 to the model on its device; returns it."""
    import torch

    if cfg.channels_last:  # only 4-D weights (convolutions) change layout
        model = model.to(memory_format=torch.channels_last)
    if cfg.precision == "fp8":
        names = convert_fp8(model)
        if not names:
            raise ConfigError(f"--precision fp8: no Linear layer of {cfg.model} can use float8")
        log.info("fp8: %d Linear layers use float8 matmuls", len(names))
        if not cfg.compile:
            log.warning("--precision fp8 without --compile: the float8 casts are not fused")
    return model


def compile_model(model, cfg):
    """torch.compile with --compile-mode; the model unchanged without --compile."""
    if not cfg.compile:
        return model
    import torch

    return torch.compile(model, mode=cfg.compile_mode)
