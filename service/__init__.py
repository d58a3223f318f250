"""The inference service: HTTP routes, a durable job queue with batching, and the engine.

Layers: `routes` (validate, enqueue, map errors; no torch) -> `scheduler` (claims batches of
compatible jobs from the queue) -> `engine` (the only code that touches the model).
"""
