"""Plumbing shared by routed-ipam and routed-net. It owns no state."""
