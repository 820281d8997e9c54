"""Filters of the build: caption (text) filters for now (text, langid, boilerplate, textmodel).
Importing this package is light; fastText and wordfreq load on first use."""
