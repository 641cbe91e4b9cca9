"""Loaded at start-up by every Python process the fault tests start (this folder is on their
PYTHONPATH): installs faultshim's pause when DELT_FAULT_PAUSE is set, so that it also reaches
processes delt starts itself (the ranks of `--processes N` under torchrun)."""

import os

if os.environ.get("DELT_FAULT_PAUSE"):
    import faultshim

    faultshim.install(os.environ["DELT_FAULT_PAUSE"])
