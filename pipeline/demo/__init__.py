"""`pipeline demo`: a small sample web of emoji pages served on loopback, and the whole story run
on it."""
