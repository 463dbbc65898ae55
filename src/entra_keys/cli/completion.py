"""``entra-keys completion bash|zsh|fish``: a shell completion script for ``entra-keys``,
written from the command's own argparse tree (every command, option and choice), so it stays in
step with the command without a dependency.

bash: ``source <(entra-keys completion bash)`` (or save it in
``~/.local/share/bash-completion/completions/entra-keys``); zsh: ``source <(entra-keys
completion zsh)`` (bash's completion through zsh's bashcompinit); fish: ``entra-keys completion
fish > ~/.config/fish/completions/entra-keys.fish``.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field

from .common import PROG, Context, SubParsers, add_command, write, write_json

__all__ = ["SHELLS", "Node", "add_completion_command", "command_tree", "script"]

#: The shells a script is written for.
SHELLS = ("bash", "zsh", "fish")


@dataclass
class Node:
    """One command of the tree: its subcommands, options (and the choices of each option that
    takes a value; None for a free value, e.g. a file) and its help line."""

    path: tuple[str, ...]
    help: str = ""
    commands: dict[str, Node] = field(default_factory=dict)
    options: dict[str, tuple[str, ...] | None] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    #: The values a positional argument takes, where it has choices (``completion SHELL``).
    values: list[str] = field(default_factory=list)


def command_tree(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Node:
    """The commands, options and choices of ``parser`` and its subparsers (argparse keeps them
    in its actions: the only way to read a parser back)."""
    node = Node(path)
    helps: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                helps[choice.dest] = choice.help or ""
            for name, sub in action.choices.items():
                child = command_tree(sub, (*path, name))
                child.help = helps.get(name, "")
                node.commands[name] = child
        elif action.option_strings:
            # an optional value (nargs "?") is completed as a flag: the next word may be anything
            takes_value = action.nargs not in (0, "?")
            for option in action.option_strings:
                if takes_value:
                    choices = action.choices
                    node.options[option] = (
                        None if choices is None else tuple(str(c) for c in choices)
                    )
                else:
                    node.flags.append(option)
        elif action.choices is not None:
            node.values.extend(str(choice) for choice in action.choices)
    return node


def _walk(node: Node) -> list[Node]:
    return [node, *(n for child in node.commands.values() for n in _walk(child))]


def _bash(root: Node) -> str:
    """A bash function: the command path is the words that name commands; it completes the
    subcommands and options of that path, and an option's choices after it."""
    lines = [
        f"# bash completion for {PROG}, written by `{PROG} completion bash`",
        "_entra_keys() {",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" path="" word i skip=0',
        '    [ "$COMP_CWORD" -gt 0 ] && prev="${COMP_WORDS[COMP_CWORD-1]}"',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        word="${COMP_WORDS[i]}"',
        "        if [ $skip = 1 ]; then skip=0; continue; fi",
        '        case "$path|$word" in',
    ]
    for node in _walk(root):
        key = " ".join(node.path)
        valued = " | ".join(f'"{key}|{o}"' for o in node.options)
        if valued:
            lines.append(f"            {valued}) skip=1 ;;")
        for name in node.commands:
            full = " ".join((*node.path, name))
            lines.append(f'            "{key}|{name}") path="{full}" ;;')
    lines += [
        "        esac",
        "    done",
        '    local words=""',
        '    case "$path|$prev" in',
    ]
    for node in _walk(root):
        key = " ".join(node.path)
        for option, choices in node.options.items():
            words = "" if choices is None else " ".join(choices)
            files = 'COMPREPLY=($(compgen -f -- "$cur")); return'
            action = f'words="{words}"' if choices is not None else files
            lines.append(f'        "{key}|{option}") {action} ;;')
    lines += ["        *)", '            case "$path" in']
    for node in _walk(root):
        key = " ".join(node.path)
        words = " ".join([*node.commands, *node.values, *node.options, *node.flags])
        lines.append(f'                "{key}") words={shlex.quote(words)} ;;')
    lines += [
        "            esac ;;",
        "    esac",
        '    COMPREPLY=($(compgen -W "$words" -- "$cur"))',
        "}",
        f"complete -o default -F _entra_keys {PROG}",
    ]
    return "\n".join(lines) + "\n"


def _zsh(root: Node) -> str:
    """zsh runs the bash function through its bashcompinit."""
    return (
        f"#compdef {PROG}\n# zsh completion for {PROG}, written by `{PROG} completion zsh`\n"
        "autoload -U +X bashcompinit && bashcompinit\n" + _bash(root)
    )


def _fish(root: Node) -> str:
    """fish ``complete`` lines: each subcommand under the commands before it, each option
    under its command, with its choices (a free value: a file)."""
    lines = [f"# fish completion for {PROG}, written by `{PROG} completion fish`"]
    lines.append(f"complete -c {PROG} -f")
    for node in _walk(root):
        seen = [f"__fish_seen_subcommand_from {word}" for word in node.path]
        under = "; and ".join(seen) if seen else "__fish_use_subcommand"
        if node.commands:
            deeper = " ".join(node.commands)
            pick = f"{under}; and not __fish_seen_subcommand_from {deeper}" if seen else under
            for name, child in node.commands.items():
                lines.append(
                    f"complete -c {PROG} -n {shlex.quote(pick)} -a {name} "
                    f"-d {shlex.quote(child.help)}"
                )
        condition = f"-n {shlex.quote('; and '.join(seen))} " if seen else ""
        if node.values:
            values = shlex.quote(" ".join(node.values))
            lines.append(f"complete -c {PROG} {condition}-xa {values}")
        for option, choices in node.options.items():
            values = " -rF" if choices is None else f" -xa {shlex.quote(' '.join(choices))}"
            lines.append(f"complete -c {PROG} {condition}{_fish_option(option)}{values}")
        for flag in node.flags:
            lines.append(f"complete -c {PROG} {condition}{_fish_option(flag)}")
    return "\n".join(lines) + "\n"


def _fish_option(option: str) -> str:
    return f"-l {option[2:]}" if option.startswith("--") else f"-s {option[1:]}"


def script(shell: str) -> str:
    """The completion script of ``shell`` for the whole ``entra-keys`` command."""
    from . import build_parser

    root = command_tree(build_parser())
    writers = {"bash": _bash, "zsh": _zsh, "fish": _fish}
    return writers[shell](root)


def cmd_completion(ctx: Context) -> int:
    """Print the completion script of the shell named."""
    text = script(ctx.args.shell)
    if ctx.json:
        write_json({"shell": ctx.args.shell, "script": text})
    else:
        write(text)
    return 0


def add_completion_command(commands: SubParsers[argparse.ArgumentParser]) -> None:
    """Add ``completion`` to the ``entra-keys`` subcommands."""
    completion = commands.add_parser(
        "completion", help="print a shell completion script (bash, zsh or fish)"
    )
    completion.add_argument("shell", choices=SHELLS)
    add_command(completion, cmd_completion, opens_provider=False)
