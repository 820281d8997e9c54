"""Prompt template sets for zero-shot classification: format strings with one `{}` for the label.

Built in:
- `imagenet80`: the 80 templates of CLIP's ImageNet prompt ensemble (openai/CLIP,
  notebooks/Prompt_Engineering_for_ImageNet.ipynb), taken from open_clip's copy.
- `imagenet7`: the 7 of them the same notebook selected as the best small ensemble.
- `generic`: a short set for images of any kind (photos, drawings, icons, emoji).
- `plain`: the bare label, i.e. no prompt engineering (CLIP's baseline).
A file (`--templates FILE`) holds one template a line; blank lines and `#` comments are skipped.
"""

from pathlib import Path

from trainer.evaluation.errors import EvalError

GENERIC = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a drawing of a {}.",
    "an icon of a {}.",
    "a close-up photo of the {}.",
    "{}",
)

PLAIN = ("{}",)


def _from_open_clip(name: str) -> tuple[str, ...]:
    # open_clip stores them as lambdas; calling each with "{}" gives back the format string.
    from open_clip import zero_shot_metadata

    return tuple(make("{}") for make in getattr(zero_shot_metadata, name))


BUILTIN = {
    "imagenet80": lambda: _from_open_clip("OPENAI_IMAGENET_TEMPLATES"),
    "imagenet7": lambda: _from_open_clip("SIMPLE_IMAGENET_TEMPLATES"),
    "generic": lambda: GENERIC,
    "plain": lambda: PLAIN,
}


def check_templates(templates, source: str) -> tuple[str, ...]:
    """The templates as a tuple, each with exactly one `{}` (an error naming `source` if not)."""
    templates = tuple(templates)
    if not templates:
        raise EvalError(f"{source}: no templates")
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise EvalError(f"{source}: template {template!r} must contain exactly one {{}}")
        try:
            template.format("label")
        except (IndexError, KeyError, ValueError):
            raise EvalError(
                f"{source}: template {template!r} has braces other than one {{}} "
                "(write a literal brace as {{ or }})"
            ) from None
    return templates


def load_templates(spec: str) -> tuple[str, ...]:
    """A built-in set by name, or a file with one template a line."""
    if spec in BUILTIN:
        return check_templates(BUILTIN[spec](), spec)
    path = Path(spec)
    if not path.is_file():
        raise EvalError(
            f"--templates {spec!r} is neither a built-in set ({', '.join(BUILTIN)}) nor a file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"cannot read templates file {path}: {exc}") from None
    lines = [line.strip() for line in text.splitlines()]
    return check_templates([ln for ln in lines if ln and not ln.startswith("#")], str(path))


def template_name(spec: str) -> str:
    return spec if spec in BUILTIN else Path(spec).name
