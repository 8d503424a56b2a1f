"""What several test modules share and that is not a fixture: config composition, the CLI run as a
user runs it, free ports, a served model's requests. Test modules import from here, never from one
another (a unit test holds that); fixtures live in tests/conftest.py."""
