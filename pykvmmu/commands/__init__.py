"""CLI subcommands and demo scenes, one module per concept (discovered by pykvmmu.cli)."""
