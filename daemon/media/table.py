"""The media the SendSeven API takes: content types, message types and limits."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
DOC, XLS, PPT = "application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint"

MB = 1024 * 1024

#: Largest size in bytes the API takes for each message type.
LIMITS: Mapping[str, int] = MappingProxyType(
    {"image": 16 * MB, "document": 100 * MB, "video": 16 * MB, "audio": 16 * MB}
)


#: The content types the API accepts (as sent), and the message type each one is sent as.
CONTENT_TYPES: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys(("image/jpeg", "image/png", "image/gif", "image/webp"), "image"),
        **dict.fromkeys(
            ("application/pdf", DOC, DOCX, XLS, XLSX, PPT, PPTX, "text/plain"), "document"
        ),
        **dict.fromkeys(("video/mp4", "video/3gpp"), "video"),
        **dict.fromkeys(
            ("audio/aac", "audio/mpeg", "audio/ogg", "audio/amr", "audio/opus"), "audio"
        ),
    }
)
