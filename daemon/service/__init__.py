"""How does the daemon live? Wiring and lifecycle: signals, reload, sd_notify, metrics
and the health check, sent-folder retention.
"""
