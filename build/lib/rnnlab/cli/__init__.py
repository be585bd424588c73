"""The `rnnlab` command: rnnlab.cli.main builds the parser and dispatches; each command is a module beside it."""
