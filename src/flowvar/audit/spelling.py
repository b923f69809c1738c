"""How the audit's messages name its options: as `flowvar audit` spells them (``--label-arg``), and, when the audit was
called from Python, also as the argument each one is (``label_arg``).

The messages are written once, where the problem is found, in the command line's spelling (most audits start there,
and the docs use it). A notebook user who called :func:`flowvar.audit.audit` passed ``label_arg=``, not
``--label-arg``: :func:`python_spelled` adds the translation to every :class:`~flowvar.errors.FlowvarError` that
leaves a Python entry point, naming only the options the message names; the command line marks its own calls with
:func:`command_line_spelling` and gets its messages unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

from flowvar.errors import FlowvarError

P = ParamSpec("P")
R = TypeVar("R")

_FROM_COMMAND_LINE: ContextVar[bool] = ContextVar("flowvar_audit_from_command_line", default=False)
_OPTION = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


@contextlib.contextmanager
def command_line_spelling() -> Iterator[None]:
    """Inside: the audit's entry points leave their messages in the command line's spelling (`flowvar audit`)."""
    token = _FROM_COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _FROM_COMMAND_LINE.reset(token)


def python_spelling(message: str, arguments: Mapping[str, str], function: str) -> str:
    """``message`` with, when it names options of ``arguments`` (option name without ``--`` → argument name), the
    sentence that says which argument of ``function`` each one is; else ``message`` unchanged."""
    named = [name for name in dict.fromkeys(_OPTION.findall(message)) if name in arguments]
    if not named:
        return message
    pairs = ", ".join(f"--{name} is {arguments[name]}=" for name in named)
    return f"{message} (called from Python: in {function}(), {pairs})"


def python_spelled(aliases: Mapping[str, str] | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a Python entry point of the audit (:func:`flowvar.audit.audit`, :func:`flowvar.audit.load_model`;
    neither calls the other, so a message is translated once): a :class:`~flowvar.errors.FlowvarError` raised inside
    it, outside :func:`command_line_spelling`, says which of its arguments the options it names are. Every parameter
    ``a_b`` is the option ``--a-b``; ``aliases`` adds options spelled otherwise (``{"model": "factory"}``)."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        arguments = {name.replace("_", "-"): name for name in inspect.signature(function).parameters}
        arguments.update(aliases or {})

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return function(*args, **kwargs)
            except FlowvarError as error:
                if not _FROM_COMMAND_LINE.get() and error.args and isinstance(error.args[0], str):
                    error.args = (python_spelling(error.args[0], arguments, function.__name__), *error.args[1:])
                raise

        return wrapper

    return decorate


__all__ = ["command_line_spelling", "python_spelled", "python_spelling"]
