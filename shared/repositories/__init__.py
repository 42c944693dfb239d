"""Firestore repositories: the only code that knows document paths and query shapes."""
