"""sendseven-watch: send files dropped into inbox folders to SendSeven conversations."""

#: The version (pyproject.toml reads it from here).
__version__ = "0.1.0"
