"""`delt finish`: the manifest of an output written by independent ranks (--rank/--world-size, Slurm arrays)."""

from pathlib import Path
from typing import Annotated

import typer

from delt_cli.cli.base import app
from delt_cli.cli.common import emit, step

EXAMPLES = """
**Examples**

```
for r in 0 1 2; do delt score raw -o scored --method perplexity --model smollm2 --rank $r --world-size 3; done
delt finish scored
sbatch --dependency=afterok:$ARRAY_JOB scripts/slurm/finish.sbatch scored
```

Checks that every shard of the run is there (names the missing ones and their ranks) and that
all shards come from the same run (same command, arguments, delt version and input), then writes
OUT/manifest.json with the ranks' summaries merged. Until then readers refuse the output.
"""


@app.command("finish", help="Check the shards of independent ranks and write the output's manifest.", epilog=EXAMPLES)
@step
def finish_cmd(
    output: Annotated[Path, typer.Argument(metavar="OUT", help="The output directory the ranks wrote.", show_default=False)],
) -> None:
    import sys

    from delt_cli.dataset.writer import finish_ranks

    finish_ranks(output, argv=["delt", *sys.argv[1:]])
    emit(output)
