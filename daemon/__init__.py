"""sendseven-watch: send files dropped into inbox folders to SendSeven conversations."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sendseven-watch")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+unknown"
