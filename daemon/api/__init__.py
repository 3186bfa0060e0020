"""How a file goes out: the SendSeven client, the streamed upload body, replies as types."""

from daemon.api.client import ApiClient
from daemon.api.replies import Attachment, Message

__all__ = ["ApiClient", "Attachment", "Message"]
