"""The one exception type that means "the user can fix this": CLIs print it as one line."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment, with what to do about it.

    CLI entry points catch it and print ``error: <message>`` without a traceback.
    """
