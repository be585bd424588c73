"""What a user writes, validated before anything heavy loads: run configs and study files (a claims file's schema is
made of its claim kinds', in tasks/claims/)."""
