"""``python -m latchkey wit``: prints the directory of the WIT this package carries, to hand
to componentize-py's ``-d``::

    componentize-py -d "$(python -m latchkey wit)" -w latchkey:guest/command componentize app -o app.wasm
"""

import argparse

from latchkey import wit_dir

parser = argparse.ArgumentParser(
    prog="python -m latchkey", description="The latchkey guest SDK's build helpers."
)
commands = parser.add_subparsers(dest="command", required=True)
commands.add_parser("wit", help="print the directory of the WIT worlds, for componentize-py's -d")
parser.parse_args()
print(wit_dir())
