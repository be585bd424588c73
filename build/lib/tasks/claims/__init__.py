"""The course's claims: each measured from studies and probes, judged by its pre-registered criterion, and reported."""
