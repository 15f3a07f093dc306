"""Auth helpers shared by services: JWT issuing/decoding with pinned algorithms."""
