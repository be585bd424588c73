"""The claims tier: a claims file (claims_file.py) with its kinds registered (registry.py, the kinds themselves in
tasks/claim_kinds/, below this package), the probes of recorded runs (probes.py), when each criterion was committed
(registration.py), the verdicts (verdicts.py) and the claims report (report.py)."""
