"""Oracles computed by the public code's pinned libraries, in a side environment of their own."""
