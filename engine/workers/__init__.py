"""Dramatiq workers: the broker, the actors, and the module the worker process loads."""
