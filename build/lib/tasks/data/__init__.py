"""Corpora: locate, fetch with a checksum, read, hash and cache each corpus once (word corpora for language models,
subword parallel corpora for translation), with the unigram floor of each split."""
