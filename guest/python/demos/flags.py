"""The demos' command-line flags, read by hand: argparse reaches for modules (``locale``)
that a component does not carry.

``parse(Options())`` reads ``sys.argv`` into a dataclass: ``--some-name VALUE`` sets the
field ``some_name`` (an ``int`` field takes a number), and a ``bool`` field is a switch.
"""

import sys
from dataclasses import fields
from typing import TypeVar

_O = TypeVar("_O")


def parse(options: _O) -> _O:
    """``options`` with the flags of ``sys.argv`` set on it."""
    kinds = {f"--{field.name.replace('_', '-')}": field for field in fields(options)}
    args = iter(sys.argv[1:])
    for flag in args:
        field = kinds.get(flag)
        if field is None:
            raise ValueError(f"unknown flag {flag}")
        kind = type(getattr(options, field.name))
        if kind is bool:
            value: object = True
        elif kind is int:
            value = int(next(args))
        else:
            value = next(args)
        setattr(options, field.name, value)
    return options
