"""Old home of the ``scrapy fleet`` helpers, now in conftest.py; kept only for
test_launcher.py and test_fleet_command.py until they import from conftest."""

from conftest import Fleet, fleet_args, frontier, make_project, wait_for  # noqa: F401
