"""Small shared helpers (atomic I/O, hashing, seeding, distributed)."""
