"""The web console's static files (served by the management port at /console)."""
