"""Pure torch and Lightning: the networks, their settings, search and the probes' maths; imports nothing of the
project."""
