"""A scripted lock client, the Python twin of ``guest/demos/src/bin/lockctl.rs``: the same
steps, the same one line of output per step, so that tests drive every language alike.
The steps are :mod:`scripting`'s, shared with the WASI 0.3 twin ``lockctl_p3.py``.
"""

import sys

import latchkey
from scripting import script, to_the_end
from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        to_the_end(script(latchkey, sys.argv[1:]))
