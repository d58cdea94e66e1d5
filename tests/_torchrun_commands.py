"""Run several ``detect`` commands, in order, in each process of one torchrun launch (one start-up
and one process group for all of them, so the 2-process tests stay fast):

    python -m torch.distributed.run --standalone --nproc_per_node 2 _torchrun_commands.py JSON

where JSON is a list of argument lists, e.g. ``[["eval", "--checkpoint", "ck.pt"], ...]``. Stops
at the first command with a non-zero exit status and exits with it.
"""

import json
import sys

from detect.cli import main
from detect.distributed import process_group

if __name__ == "__main__":
    with process_group():  # the commands' own process groups reuse this one
        for argv in json.loads(sys.argv[1]):
            status = main(argv)
            if status:
                sys.exit(status)
