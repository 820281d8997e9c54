"""Bash completion for both CLIs, made from their argparse parsers (no extra package):
`eval "$(pipeline completion)"` completes subcommands, their flags, and choices of a flag."""

from __future__ import annotations

import argparse
import shlex


def _commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    """ "build" -> its parser, "queries build" -> ..., and "" -> the top-level parser."""
    found = {prefix: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_commands(sub, f"{prefix} {name}".strip()))
    return found


def _words(parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, list[str]]]:
    """(every word that may follow: flags and subcommands, choices per flag)."""
    words, choices = [], {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            words += list(action.choices)
            continue
        words += action.option_strings
        if action.choices and action.option_strings:
            for flag in action.option_strings:
                choices[flag] = [str(c) for c in action.choices]
    return words, choices


def bash_completion(parsers: dict[str, argparse.ArgumentParser]) -> str:
    lines = []
    for prog, parser in parsers.items():
        func = f"_clipengine_{prog}"
        lines += [
            f"{func}() {{",
            '    local cur="${COMP_WORDS[COMP_CWORD]}"',
            '    local prev="${COMP_WORDS[COMP_CWORD-1]}" cmd="" w',
            "    local i",
            "    for ((i = 1; i < COMP_CWORD; i++)); do",
            '        w="${COMP_WORDS[i]}"',
            '        [[ "$w" == -* ]] || cmd="${cmd:+$cmd }$w"',
            "    done",
            '    case "$cmd" in',
        ]
        for name, sub in sorted(_commands(parser).items(), key=lambda kv: -len(kv[0])):
            words, choices = _words(sub)
            cases = "".join(
                f"{shlex.quote(flag)}) COMPREPLY=($(compgen -W {shlex.quote(' '.join(c))}"
                ' -- "$cur")); return;; '
                for flag, c in choices.items()
            )
            # a prefix match: words after the subcommand are option values
            lines += [f"        {shlex.quote(name) + '*' if name else '*'})"]
            if cases:
                lines.append(f'            case "$prev" in {cases}esac')
            lines += [
                f'            COMPREPLY=($(compgen -W {shlex.quote(" ".join(words))} -- "$cur"));;'
            ]
        lines += ["    esac", "}", f"complete -o default -F {func} {prog}", ""]
    return "\n".join(lines)
