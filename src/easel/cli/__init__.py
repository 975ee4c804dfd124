"""The ``easel`` command line: one Typer app, a sub-app per stage of the flow."""
