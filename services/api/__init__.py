"""The api service (see ../../shared/DESIGN.md §3); not yet implemented."""
