"""The task table as a queue: claims with leases, guarded writes, reaping."""
