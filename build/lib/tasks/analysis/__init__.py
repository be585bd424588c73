"""From recorded runs to an answer: the comparison table, statistics (intervals, tests, power), the answer in words,
the held-out test split, and a tuned study's answer."""
