"""When is a file ready? The observer (inotify, or the folder poller for network shares),
the settle rule, and which names are taken at all.
"""
