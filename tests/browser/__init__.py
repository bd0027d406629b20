"""Browser tests of the /ui dashboard (a package, so its conftest has a name of its own)."""
