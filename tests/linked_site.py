"""Old home of LinkedSite, now in local_site.py; kept only for test_launcher.py and
test_fleet_command.py until they import from local_site."""

from local_site import LinkedSite  # noqa: F401
