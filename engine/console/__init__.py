"""The operator web console, served by ``journey serve`` at ``/console`` (docs/console.md).

Server-rendered pages on the engine's own functions: the overview (queues, sends per
minute, the oldest pending work, the scheduler's lag, the backlog), deliveries and failed
events with their actions, journeys with their funnel and pause / resume / archive, a
customer's profile and trace, experiments, and the audit log. Templates and static files
ship in this package; nothing is fetched from elsewhere.
"""

from engine.console.app import add_console

__all__ = ["add_console"]
