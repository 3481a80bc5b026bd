"""What voltrain does when things go wrong: locks against a second run on the same
directory, one-line reports of OS errors, a checkpoint on SIGTERM, and unreadable data."""
