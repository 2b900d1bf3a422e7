"""The ``geartrain`` command and its subcommands."""
