"""What happens to one file? The steps classify, upload, send and archive (shared by the
daemon and ``send``), the per-conversation lanes, the retry policy, and the outcomes.
The one place where errors become outcomes and log lines.
"""
