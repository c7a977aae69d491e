"""A fake Telegram Bot API server for the adapter tests (aiohttp, 127.0.0.1, real HTTP).

The real aiogram ``Bot`` talks to it through ``TELEGRAM_API_BASE``: every method the adapter
calls is answered the way Telegram answers it (same JSON shapes, same error descriptions), and
every call is recorded for assertions. Updates reach the bot through ``getUpdates`` with
long-poll semantics, exactly as in production polling.

    api = FakeBotAPI()
    await api.start()                       # api.base -> "http://127.0.0.1:PORT"
    alice = api.user(1001, "Alice")
    api.push_message(api.photo_message(alice, alice_chat, image, caption="/paint"))
    call = await api.wait_call("sendPhoto")
    api.fail_next("editMessageCaption", retry_after=3)   # flood control, once
    await api.close()

Behaviour copied from Telegram: editing a message to exactly its current content and markup
answers 400 "message is not modified"; texts over 4096 characters and captions over 1024
answer 400 "message is too long"; ``getFile`` refuses files over 20 MB; file downloads live
at ``/file/bot<token>/<file_path>``; album items share a ``media_group_id``; ``sendAnimation``
answers with an ``animation`` and the same file as ``document``, and refuses uploads over
50 MB with 413.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DOWNLOAD_LIMIT = 20 * 1024 * 1024
UPLOAD_LIMIT = 50 * 1024 * 1024  # what a bot may upload (sendAnimation, sendDocument, ...)
MESSAGE_LIMIT = 4096  # characters of a text message
CAPTION_LIMIT = 1024  # characters of a photo's or a document's caption
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
JSON_FIELDS = frozenset(
    {"reply_markup", "reply_parameters", "media", "allowed_updates", "commands", "entities"}
)


@dataclass
class Call:
    """One request the bot made: the method, its form fields (JSON fields decoded), uploads."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes]
    at: float
    status: int = 200  # what the fake answered
    result: Any = None  # the "result" of a successful answer (a sent message, ...)
    error: str | None = None  # the description of a failed one

    @property
    def chat_id(self) -> int | None:
        raw = self.params.get("chat_id")
        return int(raw) if raw is not None else None

    @property
    def text(self) -> str:
        """The text or caption this call sets (also inside an ``editMessageMedia`` media)."""
        media = self.params.get("media")
        if isinstance(media, dict):
            return str(media.get("caption") or "")
        return str(self.params.get("text") or self.params.get("caption") or "")

    @property
    def buttons(self) -> list[tuple[str, str]]:
        """(text, callback_data) of every inline button, row by row."""
        markup = self.params.get("reply_markup") or {}
        rows = markup.get("inline_keyboard") or []
        return [(b.get("text", ""), b.get("callback_data", "")) for row in rows for b in row]

    def upload(self, name: str) -> bytes | None:
        """The bytes uploaded for field ``name`` (``attach://`` references followed)."""
        value = self.params.get(name)
        if isinstance(value, dict):
            value = value.get("media")
        if isinstance(value, str) and value.startswith("attach://"):
            return self.files.get(value.removeprefix("attach://"))
        return self.files.get(name)


@dataclass
class Failure:
    method: str
    status: int
    description: str
    retry_after: int | None
    when: Callable[[Call], bool] | None


@dataclass
class StoredFile:
    file_id: str
    unique_id: str
    path: str
    data: bytes
    declared_size: int


@dataclass
class FakeBotAPI:
    token: str = "123456:TEST-fake-token"
    bot_username: str = "atelier_test_bot"
    calls: list[Call] = field(default_factory=list)
    waiting: list[Call] = field(default_factory=list)  # calls held back (see hold())
    downloads: list[str] = field(default_factory=list)  # file paths fetched
    messages: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    admins: dict[int, set[int]] = field(default_factory=dict)  # chat id -> user ids
    pinned: dict[int, list[int]] = field(default_factory=dict)  # chat id -> message ids

    def __post_init__(self) -> None:
        self.bot_id = int(self.token.split(":", 1)[0])
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(100)
        self._file_ids = itertools.count(1)
        self._files: dict[str, StoredFile] = {}
        self._lost: set[str] = set()  # file paths whose download answers 404
        self._unplugged = False  # downloads break off half-way
        self._held: dict[str, asyncio.Event] = {}  # methods answered only once released
        self._failures: list[Failure] = []
        self._changed = asyncio.Condition()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.base = ""

    # ------------------------------------------------------------------------------------------
    # lifecycle

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", self._method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"
        return self.base

    async def close(self) -> None:
        self._closing = True
        await self._notify()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeBotAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------------
    # building what members send

    def user(self, user_id: int, first_name: str, username: str | None = None) -> dict[str, Any]:
        return {
            "id": user_id,
            "is_bot": False,
            "first_name": first_name,
            "username": username or first_name.lower(),
        }

    @staticmethod
    def private_chat(user: dict[str, Any]) -> dict[str, Any]:
        return {"id": user["id"], "type": "private", "first_name": user["first_name"]}

    @staticmethod
    def group_chat(chat_id: int, title: str = "Painters") -> dict[str, Any]:
        return {"id": chat_id, "type": "supergroup", "title": title}

    def add_file(self, data: bytes, *, declared_size: int | None = None, ext: str = "jpg") -> str:
        """Store ``data`` as a downloadable file; returns its file_id."""
        n = next(self._file_ids)
        file_id = f"FILE{n:04d}"
        self._files[file_id] = StoredFile(
            file_id=file_id,
            unique_id=f"U{n:04d}",
            path=f"files/file_{n}.{ext}",
            data=data,
            declared_size=len(data) if declared_size is None else declared_size,
        )
        return file_id

    def lose(self, file_id: str) -> None:
        """``getFile`` still knows the file, but downloading it answers 404 (as when Telegram's
        file server has dropped it)."""
        self._lost.add(self._files[file_id].path)

    def unplug_files(self) -> None:
        """From now on every download breaks off half-way (the connection drops)."""
        self._unplugged = True

    def file_bytes(self, file_id: str) -> bytes:
        return self._files[file_id].data

    def _message(
        self,
        user: dict[str, Any],
        chat: dict[str, Any],
        *,
        reply_to: dict[str, Any] | None = None,
        media_group_id: str | None = None,
        **content: Any,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": user,
            **content,
        }
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        if media_group_id is not None:
            message["media_group_id"] = media_group_id
        return message

    def text_message(
        self,
        user: dict[str, Any],
        chat: dict[str, Any],
        text: str,
        *,
        reply_to: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        entities = []
        if text.startswith("/"):
            length = len(text.split(maxsplit=1)[0])
            entities.append({"type": "bot_command", "offset": 0, "length": length})
        return self._message(user, chat, reply_to=reply_to, text=text, entities=entities)

    def photo_message(
        self,
        user: dict[str, Any],
        chat: dict[str, Any],
        image: bytes,
        *,
        caption: str | None = None,
        thumbnail: bytes = b"thumb",
        declared_size: int | None = None,
        reply_to: dict[str, Any] | None = None,
        media_group_id: str | None = None,
    ) -> dict[str, Any]:
        """A photo as Telegram delivers it: several sizes, the largest last."""
        small = self.add_file(thumbnail)
        large = self.add_file(image, declared_size=declared_size)
        sizes = [
            self._photo_size(small, 90, 60),
            self._photo_size(large, 1280, 853),
        ]
        content: dict[str, Any] = {"photo": sizes}
        if caption is not None:
            content["caption"] = caption
        return self._message(
            user, chat, reply_to=reply_to, media_group_id=media_group_id, **content
        )

    def document_message(
        self,
        user: dict[str, Any],
        chat: dict[str, Any],
        data: bytes,
        *,
        file_name: str = "picture.png",
        mime_type: str | None = "image/png",
        caption: str | None = None,
        declared_size: int | None = None,
        reply_to: dict[str, Any] | None = None,
        media_group_id: str | None = None,
    ) -> dict[str, Any]:
        file_id = self.add_file(data, declared_size=declared_size, ext=file_name.rsplit(".")[-1])
        stored = self._files[file_id]
        document: dict[str, Any] = {
            "file_id": file_id,
            "file_unique_id": stored.unique_id,
            "file_name": file_name,
            "file_size": stored.declared_size,
        }
        if mime_type is not None:
            document["mime_type"] = mime_type
        content: dict[str, Any] = {"document": document}
        if caption is not None:
            content["caption"] = caption
        return self._message(
            user, chat, reply_to=reply_to, media_group_id=media_group_id, **content
        )

    def _photo_size(self, file_id: str, width: int, height: int) -> dict[str, Any]:
        stored = self._files[file_id]
        return {
            "file_id": file_id,
            "file_unique_id": stored.unique_id,
            "width": width,
            "height": height,
            "file_size": stored.declared_size,
        }

    # ------------------------------------------------------------------------------------------
    # feeding updates

    def push(self, **update: Any) -> int:
        update_id = next(self._update_ids)
        self._updates.append({"update_id": update_id, **update})
        asyncio.get_running_loop().create_task(self._notify())
        return update_id

    def push_message(self, *messages: dict[str, Any]) -> None:
        """Deliver messages as separate updates (an album arrives this way)."""
        for message in messages:
            self.push(message=message)

    def press(self, user: dict[str, Any], message: dict[str, Any], data: str) -> str:
        """A member presses an inline button under ``message``; returns the callback query id."""
        query_id = f"CQ{next(self._update_ids)}"
        self.push(
            callback_query={
                "id": query_id,
                "from": user,
                "chat_instance": "ci",
                "message": message,
                "data": data,
            }
        )
        return query_id

    # ------------------------------------------------------------------------------------------
    # scripting and assertions

    def fail_next(
        self,
        method: str,
        *,
        status: int | None = None,
        description: str | None = None,
        retry_after: int | None = None,
        when: Callable[[Call], bool] | None = None,
    ) -> None:
        """Answer the next matching call of ``method`` with an error (429 when ``retry_after``)."""
        if retry_after is not None:
            status = status or 429
            description = description or f"Too Many Requests: retry after {retry_after}"
        self._failures.append(
            Failure(
                method=method,
                status=status or 400,
                description=description or NOT_MODIFIED,
                retry_after=retry_after,
                when=when,
            )
        )

    def hold(self, method: str) -> asyncio.Event:
        """Answer calls of ``method`` only once the returned event is set (a slow upload)."""
        self._held[method] = asyncio.Event()
        return self._held[method]

    def calls_to(self, *methods: str) -> list[Call]:
        return [c for c in self.calls if c.method in methods]

    async def wait_call(
        self,
        *methods: str,
        where: Callable[[Call], bool] | None = None,
        after: int = 0,
        within: float = 10.0,
    ) -> Call:
        """The first call (from index ``after``) to one of ``methods`` matching ``where``."""

        def found() -> Call | None:
            for call in self.calls[after:]:
                if call.method in methods and (where is None or where(call)):
                    return call
            return None

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(found), within)
        result = found()
        assert result is not None
        return result

    async def wait_until(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checked after every call the bot makes."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), within)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------------------------------
    # HTTP

    async def _method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.match_info["method"]
        form = await request.post()
        params: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        for key, value in form.items():
            if isinstance(value, web.FileField):
                files[key] = value.file.read()
            elif key in JSON_FIELDS:
                params[key] = json.loads(str(value))
            else:
                params[key] = str(value)
        call = Call(method=method, params=params, files=files, at=time.monotonic())
        held = self._held.get(method)
        if held is not None:
            self.waiting.append(call)
            await self._notify()
            await held.wait()
            self.waiting.remove(call)
        if method == "getUpdates":
            return web.json_response({"ok": True, "result": await self._do_getUpdates(call)})
        failure = self._take_failure(call)
        handler = getattr(self, f"_do_{method}", None)
        if failure is not None:
            call.status, call.error = failure.status, failure.description
        elif handler is None:
            call.status, call.error = 404, "Not Found: method not found"
        else:
            try:
                call.result = await handler(call)
            except ApiError as error:
                call.status, call.error = error.status, error.description
        # Recorded once answered, so a test that sees the call also sees its result.
        self.calls.append(call)
        await self._notify()
        if call.error is not None:
            return _error(call.status, call.error, failure.retry_after if failure else None)
        return web.json_response({"ok": True, "result": call.result})

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        if path in self._lost:
            return web.Response(status=404, text="Not Found")
        if self._unplugged:
            response = web.StreamResponse(headers={"Content-Length": "100000"})
            await response.prepare(request)
            await response.write(b"the first bytes")
            assert request.transport is not None
            request.transport.close()
            return response
        for stored in self._files.values():
            if stored.path == path:
                self.downloads.append(path)
                return web.Response(body=stored.data)
        return web.Response(status=404)

    def _take_failure(self, call: Call) -> Failure | None:
        for failure in self._failures:
            if failure.method == call.method and (failure.when is None or failure.when(call)):
                self._failures.remove(failure)
                return failure
        return None

    # ------------------------------------------------------------------------------------------
    # methods

    def _bot_user(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "Atelier",
            "username": self.bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _do_getMe(self, call: Call) -> Any:
        return self._bot_user()

    async def _do_deleteWebhook(self, call: Call) -> Any:
        return True

    async def _do_setMyCommands(self, call: Call) -> Any:
        return True

    async def _do_sendChatAction(self, call: Call) -> Any:
        return True

    async def _do_getUpdates(self, call: Call) -> Any:
        offset = int(call.params.get("offset") or 0)
        timeout = float(call.params.get("timeout") or 0)
        self._updates = [u for u in self._updates if u["update_id"] >= offset]

        def ready() -> bool:
            return bool(self._updates) or self._closing

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(ready), timeout)
        return list(self._updates)

    async def _do_getFile(self, call: Call) -> Any:
        stored = self._files.get(str(call.params.get("file_id")))
        if stored is None:
            raise ApiError("Bad Request: invalid file_id")
        if stored.declared_size > DOWNLOAD_LIMIT:
            raise ApiError("Bad Request: file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.unique_id,
            "file_size": stored.declared_size,
            "file_path": stored.path,
        }

    def _chat(self, chat_id: int) -> dict[str, Any]:
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "Member"}
        return {"id": chat_id, "type": "supergroup", "title": "Painters"}

    def _new_message(self, call: Call, **content: Any) -> dict[str, Any]:
        chat_id = call.chat_id
        assert chat_id is not None, "chat_id is required"
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": self._chat(chat_id),
            "from": self._bot_user(),
            **content,
        }
        markup = call.params.get("reply_markup") or {}
        if "inline_keyboard" in markup:  # messages only ever carry inline keyboards
            message["reply_markup"] = markup
        reply = call.params.get("reply_parameters") or {}
        if reply.get("message_id"):
            message["reply_to_message"] = {
                "message_id": reply["message_id"],
                "date": int(time.time()),
                "chat": self._chat(chat_id),
            }
        self.messages[(chat_id, message["message_id"])] = message
        return message

    def _photo_from(self, call: Call, value: Any) -> list[dict[str, Any]]:
        if isinstance(value, str) and not value.startswith("attach://"):
            if value not in self._files:
                raise ApiError("Bad Request: wrong file identifier/HTTP URL specified")
            file_id = value
        else:
            data = call.upload("photo") if not isinstance(value, str) else None
            if data is None and isinstance(value, str):
                data = call.files.get(value.removeprefix("attach://"))
            if data is None:
                raise ApiError("Bad Request: there is no photo in the request")
            file_id = self.add_file(data)
        return [self._photo_size(file_id, 1280, 853)]

    async def _do_sendMessage(self, call: Call) -> Any:
        text = call.params.get("text")
        if not text:
            raise ApiError("Bad Request: message text is empty")
        if len(text) > MESSAGE_LIMIT:
            raise ApiError("Bad Request: message is too long")
        return self._new_message(call, text=text)

    @staticmethod
    def _check_caption(call: Call) -> None:
        if len(call.text) > CAPTION_LIMIT:
            raise ApiError("Bad Request: message caption is too long")

    async def _do_sendPhoto(self, call: Call) -> Any:
        self._check_caption(call)
        photo = self._photo_from(call, call.params.get("photo") or "attach://photo")
        content: dict[str, Any] = {"photo": photo}
        if call.params.get("caption"):
            content["caption"] = call.params["caption"]
        return self._new_message(call, **content)

    async def _do_sendDocument(self, call: Call) -> Any:
        self._check_caption(call)
        value = call.params.get("document") or "attach://document"
        data = call.files.get(str(value).removeprefix("attach://"))
        if data is None:
            raise ApiError("Bad Request: there is no document in the request")
        file_id = self.add_file(data, ext="png")
        stored = self._files[file_id]
        content: dict[str, Any] = {
            "document": {
                "file_id": file_id,
                "file_unique_id": stored.unique_id,
                "file_name": "painting.png",
                "file_size": len(data),
            }
        }
        if call.params.get("caption"):
            content["caption"] = call.params["caption"]
        return self._new_message(call, **content)

    async def _do_sendAnimation(self, call: Call) -> Any:
        """An animation (GIF, or H.264 MP4 without sound) as Telegram answers it: an
        ``animation`` object and, for older clients, the same file as ``document``."""
        self._check_caption(call)
        value = call.params.get("animation") or "attach://animation"
        if isinstance(value, str) and not value.startswith("attach://"):
            if value not in self._files:
                raise ApiError("Bad Request: wrong file identifier/HTTP URL specified")
            file_id = value
        else:
            data = call.files.get(str(value).removeprefix("attach://"))
            if data is None:
                raise ApiError("Bad Request: there is no animation in the request")
            if len(data) > UPLOAD_LIMIT:
                raise ApiError("Request Entity Too Large", status=413)
            file_id = self.add_file(data, ext="mp4")
        stored = self._files[file_id]
        about = {
            "file_id": file_id,
            "file_unique_id": stored.unique_id,
            "file_name": "animation.mp4",
            "mime_type": "video/mp4",
            "file_size": stored.declared_size,
        }
        content: dict[str, Any] = {
            "animation": {**about, "width": 640, "height": 480, "duration": 4},
            "document": about,
        }
        if call.params.get("caption"):
            content["caption"] = call.params["caption"]
        return self._new_message(call, **content)

    def _stored(self, call: Call) -> dict[str, Any]:
        key = (int(call.params["chat_id"]), int(call.params["message_id"]))
        message = self.messages.get(key)
        if message is None:
            raise ApiError("Bad Request: message to edit not found")
        return message

    @staticmethod
    def _same(message: dict[str, Any], name: str, value: Any, markup: Any) -> bool:
        return message.get(name) == value and message.get("reply_markup") == markup

    async def _do_editMessageText(self, call: Call) -> Any:
        message = self._stored(call)
        if "text" not in message:
            raise ApiError("Bad Request: there is no text in the message to edit")
        markup = call.params.get("reply_markup")
        if self._same(message, "text", call.params.get("text"), markup):
            raise ApiError(NOT_MODIFIED)
        message["text"] = call.params.get("text")
        message["reply_markup"] = markup
        return message

    async def _do_editMessageCaption(self, call: Call) -> Any:
        self._check_caption(call)
        message = self._stored(call)
        if "text" in message:
            raise ApiError("Bad Request: there is no caption in the message to edit")
        markup = call.params.get("reply_markup")
        if self._same(message, "caption", call.params.get("caption"), markup):
            raise ApiError(NOT_MODIFIED)
        message["caption"] = call.params.get("caption")
        message["reply_markup"] = markup
        return message

    async def _do_editMessageMedia(self, call: Call) -> Any:
        message = self._stored(call)
        if "text" in message:
            raise ApiError("Bad Request: message can't be edited")  # a text message has no media
        media = call.params.get("media") or {}
        message["photo"] = self._photo_from(call, media.get("media"))
        message["caption"] = media.get("caption")
        message["reply_markup"] = call.params.get("reply_markup")
        return message

    async def _do_editMessageReplyMarkup(self, call: Call) -> Any:
        message = self._stored(call)
        markup = call.params.get("reply_markup")
        if message.get("reply_markup") == markup:
            raise ApiError(NOT_MODIFIED)
        message["reply_markup"] = markup
        return message

    async def _do_deleteMessage(self, call: Call) -> Any:
        key = (int(call.params["chat_id"]), int(call.params["message_id"]))
        if self.messages.pop(key, None) is None:
            raise ApiError("Bad Request: message to delete not found")
        return True

    async def _do_pinChatMessage(self, call: Call) -> Any:
        chat_id, message_id = self._pin_target(call)
        pins = self.pinned.setdefault(chat_id, [])
        if message_id not in pins:
            pins.append(message_id)
        return True

    async def _do_unpinChatMessage(self, call: Call) -> Any:
        chat_id, message_id = self._pin_target(call)
        pins = self.pinned.get(chat_id, [])
        if message_id in pins:
            pins.remove(message_id)
        return True

    def _pin_target(self, call: Call) -> tuple[int, int]:
        """In a group only an administrator bot may pin (Telegram's own refusal otherwise)."""
        chat_id, message_id = int(call.params["chat_id"]), int(call.params["message_id"])
        if chat_id < 0 and self.bot_id not in self.admins.get(chat_id, set()):
            raise ApiError("Bad Request: not enough rights to manage pinned messages in the chat")
        if (chat_id, message_id) not in self.messages:
            raise ApiError("Bad Request: message to pin not found")
        return chat_id, message_id

    async def _do_answerCallbackQuery(self, call: Call) -> Any:
        return True

    def _member(self, chat_id: int, user_id: int) -> dict[str, Any]:
        user = {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}
        if user_id in self.admins.get(chat_id, set()):
            return {"status": "creator", "user": user, "is_anonymous": False}
        return {"status": "member", "user": user}

    async def _do_getChatMember(self, call: Call) -> Any:
        return self._member(int(call.params["chat_id"]), int(call.params["user_id"]))

    async def _do_getChatAdministrators(self, call: Call) -> Any:
        chat_id = int(call.params["chat_id"])
        return [self._member(chat_id, uid) for uid in sorted(self.admins.get(chat_id, set()))]


def is_file(file_id: str) -> Callable[[Call], bool]:
    """A ``when`` for :meth:`FakeBotAPI.fail_next`: a ``getFile`` for this file."""
    return lambda call: call.params.get("file_id") == file_id


class ApiError(Exception):
    def __init__(self, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.description = description
        self.status = status


def _error(status: int, description: str, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=status)
