"""Where is it recorded? The journal, the claims (owner folders held with ``flock``), and
the archive moves into ``sent/`` and ``failed/`` with their sidecars.
"""
