"""The task kinds (language modelling, translation), one module and one object each, looked up by `task` in the
registry; the Prefect steps that ask them, and a study's estimate."""
