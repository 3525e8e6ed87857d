"""Exit codes of the ``journey`` command, named so scripts and tests can rely on them."""

from __future__ import annotations

RET_OK = 0
RET_INVALID = 1  # the input (a journey, a payload) is invalid, or lint found problems
RET_USAGE = 2  # click's own code for a bad command line
RET_CONFIG = 3  # a setting in the environment is missing or malformed
RET_SERVICE = 4  # a service (database, Redis) could not be reached
RET_NOT_FOUND = 5  # the thing named (a key, a customer, a journey) does not exist
