"""``dlmsd completion bash|zsh``: a shell completion script generated from the parser.

The script is static text (subcommands, their options, the choices of options
that have them, file names where an option takes a file), so completing needs
no Python at all and no extra dependency. Regenerate it after upgrading dlmsd.

    source <(dlmsd completion bash)            # bash: ~/.bashrc
    dlmsd completion zsh > "${fpath[1]}/_dlmsd"  # zsh: then compinit
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import attrs

# Options whose value is a file (or a device): completed with file names.
_FILE_WORDS = re.compile(r"file|path|dev|keys|quarantine|config|spool|state", re.IGNORECASE)


@attrs.frozen
class Option:
    """One option of a subcommand, as completion needs it."""

    flags: tuple[str, ...]
    help: str
    takes_value: bool
    choices: tuple[str, ...]
    is_file: bool


@attrs.frozen
class Command:
    """One subcommand: its name, one-line help and options."""

    name: str
    help: str
    options: tuple[Option, ...]
    #: Words a positional argument takes (its choices, or nested subcommands).
    words: tuple[str, ...] = ()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dlmsd completion``."""
    parser = sub.add_parser(
        "completion",
        help="print a bash or zsh completion script",
        description="Print a completion script for SHELL. bash: `source <(dlmsd completion "
        "bash)` in ~/.bashrc. zsh: `dlmsd completion zsh > ~/.zfunc/_dlmsd` with ~/.zfunc "
        "in $fpath before compinit (or `source <(dlmsd completion zsh)` after compinit).",
    )
    parser.add_argument("shell", choices=("bash", "zsh"))
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dlmsd.cli import build_parser

    commands = list(commands_of(build_parser()))
    print(bash_script(commands) if args.shell == "bash" else zsh_script(commands), end="")
    return 0


def commands_of(parser: argparse.ArgumentParser) -> Iterator[Command]:
    """The subcommands of the ``dlmsd`` parser, in the order they were added."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, subparser in action.choices.items():
            yield Command(name, helps.get(name, ""), tuple(_options(subparser)), _words(subparser))


def _words(parser: argparse.ArgumentParser) -> tuple[str, ...]:
    words: list[str] = []
    for action in parser._actions:
        if not action.option_strings and action.choices:
            words.extend(str(choice) for choice in action.choices)
    return tuple(words)


def _options(parser: argparse.ArgumentParser) -> Iterator[Option]:
    for action in parser._actions:
        if not action.option_strings:
            continue
        choices = tuple(str(choice) for choice in action.choices or ())
        takes_value = action.nargs != 0
        hint = f"{action.dest} {action.metavar or ''}"
        yield Option(
            tuple(action.option_strings),
            " ".join((action.help or "").split()),
            takes_value,
            choices,
            takes_value and not choices and bool(_FILE_WORDS.search(hint)),
        )


# -- bash ------------------------------------------------------------------------------


def bash_script(commands: list[Command]) -> str:
    """A bash completion function for ``dlmsd`` and its ``complete`` line."""
    names = " ".join(command.name for command in commands)
    cases: list[str] = []
    for command in commands:
        values: list[str] = []
        for option in command.options:
            if not option.takes_value:
                continue
            flags = "|".join(option.flags)
            if option.choices:
                words = " ".join(option.choices)
                reply = f'COMPREPLY=($(compgen -W "{words}" -- "$cur"))'
                values.append(f"            {flags}) {reply} ;;")
            elif option.is_file:
                values.append(f'            {flags}) COMPREPLY=($(compgen -f -- "$cur")) ;;')
            else:
                values.append(f"            {flags}) COMPREPLY=() ;;")
        words = " ".join(flag for option in command.options for flag in option.flags)
        positional = " ".join(command.words)
        cases.append(
            f"    {command.name})\n"
            '        case "$prev" in\n'
            + "".join(line + "\n" for line in values)
            + "            *)\n"
            '                if [[ "$cur" == -* ]]; then\n'
            f'                    COMPREPLY=($(compgen -W "{words}" -- "$cur"))\n'
            + (
                "                else\n"
                f'                    COMPREPLY=($(compgen -W "{positional}" -- "$cur"))\n'
                if command.words
                else ""
            )
            + "                fi ;;\n"
            "        esac ;;"
        )
    body = "\n".join(cases)
    return f"""# bash completion for dlmsd (generated by `dlmsd completion bash`)
_dlmsd() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}"
    local prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local command="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            -*) ;;
            *) command="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    COMPREPLY=()
    case "$command" in
    "")
        COMPREPLY=($(compgen -W "{names} --help --version" -- "$cur")) ;;
{body}
    esac
}}
complete -o default -F _dlmsd dlmsd
"""


# -- zsh -------------------------------------------------------------------------------


def zsh_script(commands: list[Command]) -> str:
    """A zsh completion function (``#compdef dlmsd``), loadable from $fpath or sourced."""
    described = "\n".join(
        f"        {_zsh_quote(command.name + ':' + _zsh_escape(command.help))}"
        for command in commands
    )
    cases: list[str] = []
    for command in commands:
        specs = [_zsh_spec(option) for option in command.options]
        rest = f"'*:argument:({' '.join(command.words)})'" if command.words else "'*:file:_files'"
        lines = " \\\n            ".join([*specs, rest])
        cases.append(f"    ({command.name})\n        _arguments -s \\\n            {lines} ;;")
    body = "\n".join(cases)
    return f"""#compdef dlmsd
# zsh completion for dlmsd (generated by `dlmsd completion zsh`)
_dlmsd() {{
    local -a commands
    commands=(
{described}
    )
    if (( CURRENT == 2 )); then
        _describe -t commands 'dlmsd command' commands
        return
    fi
    local command=$words[2]
    shift words
    (( CURRENT-- ))
    case $command in
{body}
    esac
}}
if [[ $funcstack[1] == _dlmsd ]]; then
    _dlmsd "$@"
else
    compdef _dlmsd dlmsd
fi
"""


def _zsh_spec(option: Option) -> str:
    description = _zsh_escape(option.help)
    if option.choices:
        action = f":{option.flags[-1].lstrip('-')}:({' '.join(option.choices)})"
    elif option.is_file:
        action = ":file:_files"
    elif option.takes_value:
        action = ":value: "
    else:
        action = ""
    if len(option.flags) == 1:
        return _zsh_quote(f"{option.flags[0]}[{description}]{action}")
    exclusive = " ".join(option.flags)
    braces = ",".join(option.flags)
    # the braces stay unquoted: zsh expands them to one spec per flag
    described = _zsh_quote(f"[{description}]{action}")
    return _zsh_quote(f"({exclusive})") + "{" + braces + "}" + described


def _zsh_escape(text: str) -> str:
    return re.sub(r"([\[\]:\\])", r"\\\1", text)


def _zsh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
