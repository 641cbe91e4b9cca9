"""`python -m delt_cli ...` runs the CLI; this is also what `accelerate launch -m delt_cli` starts."""

from delt_cli.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
