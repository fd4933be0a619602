"""What several test suites share: fixture files under tests/data and run results."""
