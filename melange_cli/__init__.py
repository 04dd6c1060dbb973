"""The `melange` command: click commands and output formatting, nothing more."""
