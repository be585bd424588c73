"""What a user writes, validated before anything heavy loads: run configs, study files, claims files."""
