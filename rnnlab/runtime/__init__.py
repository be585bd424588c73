"""Runtime plumbing under every command: the project's directories and checks, the store, Prefect's server and the
processes a command starts, the servers of `rnnlab server` and their automations, the kept answers of `rnnlab
compare`."""
