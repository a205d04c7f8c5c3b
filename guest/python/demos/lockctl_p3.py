"""``lockctl`` for WASI 0.3: the steps of :mod:`scripting` over :mod:`latchkey.aio`, each
call that may wait awaited. The same lines as every other ``lockctl``."""

import sys

from latchkey import aio
from scripting import script
from wit_world import exports


class Run(exports.Run):
    async def run(self) -> None:
        await script(aio, sys.argv[1:])
