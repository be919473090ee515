"""Moving the base64 images out of Open WebUI's chats, a chat at a time.

For each chat: read its rows (no transaction held), find every base64 image, store each in
PicGate and check it reads back, then, in one short write transaction, rewrite the chat's
texts to PicGate URLs. A chat is therefore always either as it was or fully rewritten: a run
stopped at any point loses nothing, and the next run picks up what is left (images stored by
the stopped run are found again by their sha256 and not stored twice).

An image PicGate will not take (SVG, a truncated file, one over ``MAX_IMAGE_MB``) stays in its
chat as it was and is counted as skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from picgate.errors import BadRequest
from picgate.openwebui.database import ChatRecord, OpenWebUIDatabase, StoredText
from picgate.openwebui.scan import find_data_urls, message_ids_by_key, replace_data_urls
from picgate.openwebui.sink import ImageSink, Origin
from picgate.storage.codec import decode_base64, sniff

# a PicGate image id is 22 characters: the dry run sizes its URLs with one of that length
_ID_PLACEHOLDER = "x" * 22


@dataclass
class Report:
    """What a run found and did. Byte counts are the UTF-8 size of the chats' JSON texts."""

    dry_run: bool
    chats_scanned: int = 0
    chats_with_images: int = 0
    chats_rewritten: int = 0
    images_found: int = 0  # data URLs, every copy counted
    images_distinct: int = 0  # distinct images per chat
    images_skipped: int = 0  # distinct images PicGate does not take; left in place
    bytes_before: int = 0
    bytes_after: int = 0
    file_bytes_before: int | None = None
    file_bytes_after: int | None = None
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Candidate:
    body: str
    ext: str
    origin: Origin


class Migration:
    """One run over an Open WebUI database.

    ``before_commit`` runs inside each chat's write transaction, after its updates and before
    its commit (tests stop the process there). ``progress(done, total)`` after each chat.
    """

    def __init__(
        self,
        *,
        database: OpenWebUIDatabase,
        sink: ImageSink,
        base_url: str,
        max_image_bytes: int,
        dry_run: bool = False,
        before_commit: Callable[[str], None] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.database = database
        self.sink = sink
        self.base_url = base_url.rstrip("/")
        self.max_image_bytes = max_image_bytes
        self.report = Report(dry_run=dry_run)
        self.before_commit = before_commit
        self.progress = progress

    def run(self) -> Report:
        """Every chat once. Stops at the first image that cannot be stored (the report's
        ``errors`` says which); chats done before it stay done."""
        report = self.report
        report.file_bytes_before = self.database.size()
        total = self.database.count_chats()
        for chat_id in self.database.chat_ids():
            record = self.database.read(chat_id)
            if record is not None:
                report.chats_scanned += 1
                if not self._migrate(record):
                    break
            if self.progress is not None:
                self.progress(report.chats_scanned, total)
        report.file_bytes_after = self.database.size()
        return report

    def _migrate(self, record: ChatRecord) -> bool:
        report = self.report
        before = sum(_size(t.text) for t in record.texts)
        report.bytes_before += before
        candidates = self._candidates(record)
        if not candidates:
            report.bytes_after += before
            return True
        report.chats_with_images += 1
        report.images_distinct += len(candidates)
        urls: dict[str, str] = {}
        for key, candidate in candidates.items():
            data = self._decode(candidate)
            if data is None:
                report.images_skipped += 1
            elif report.dry_run:
                urls[key] = f"{self.base_url}/images/{_ID_PLACEHOLDER}.{candidate.ext}"
            else:
                try:
                    urls[key] = self.sink.keep(data, candidate.origin)
                except Exception as exc:
                    report.errors.append(f"chat {record.chat_id}: {exc}")
                    report.bytes_after += before
                    return False
        if report.dry_run:
            report.bytes_after += sum(
                _size(replace_data_urls(t.text, urls)[0]) for t in record.texts
            )
            return True
        after: list[int] = []

        def rewrite(fresh: ChatRecord) -> list[StoredText]:
            # the chat as it is now, inside the write transaction: Open WebUI may have added
            # a message since it was read (its new images wait for the next run)
            after.clear()
            changes = []
            for text in fresh.texts:
                new, count = replace_data_urls(text.text, urls)
                after.append(_size(new) if count else _size(text.text))
                if count:
                    changes.append(StoredText(text.table, text.row_id, text.column, new))
            return changes

        hook = self.before_commit
        changed = self.database.write(
            record.chat_id,
            rewrite,
            before_commit=None if hook is None else (lambda: hook(record.chat_id)),
        )
        report.bytes_after += sum(after) if after else before
        if changed:
            report.chats_rewritten += 1
        return True

    def _candidates(self, record: ChatRecord) -> dict[str, _Candidate]:
        """Each distinct image of the chat, with the message it was first seen in."""
        messages: dict[str, str] = {}
        for text in record.texts:
            if text.table == "chat" and text.column == "chat" and "base64," in text.text:
                messages.update(message_ids_by_key(text.text))
        found: dict[str, _Candidate] = {}
        for text in record.texts:
            for image in find_data_urls(text.text):
                self.report.images_found += 1
                key = image.key
                if key in found:
                    continue
                if text.table == "chat_message":
                    message_id: str | None = text.row_id
                    user_id = text.user_id or record.user_id
                else:
                    message_id, user_id = messages.get(key), record.user_id
                found[key] = _Candidate(
                    body=image.body,
                    ext=image.subtype,
                    origin=Origin(record.chat_id, user_id, message_id),
                )
        return found

    def _decode(self, candidate: _Candidate) -> bytes | None:
        """The image's bytes, or None when PicGate would refuse them."""
        if len(candidate.body) > self.max_image_bytes * 4 // 3 + 4:
            return None
        try:
            data = decode_base64(candidate.body)
            kind = sniff(data)
        except BadRequest:
            return None
        candidate.ext = kind.ext
        return data


def _size(text: str) -> int:
    return len(text.encode("utf-8"))
