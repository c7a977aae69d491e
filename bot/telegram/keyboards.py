"""The inline keyboards under Telegram's status messages and results, and the typed button
data they carry (what the buttons do is :mod:`bot.telegram.buttons`).

Each button is :class:`~aiogram.filters.callback_data.CallbackData` holding a job id:
``cancel:<job>``, ``reroll:<change>:<job>``, ``timelapse:<job>``, ``delete:<job>:<file
message>``. Those are the strings of buttons already posted in members' chats, so they never
change; the job's state lives in the store, so a button still works after a restart.
"""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot import replies
from bot.jobs import Job
from bot.options import rerolls_for


class CancelButton(CallbackData, prefix="cancel"):
    job: str


class RerollButton(CallbackData, prefix="reroll"):
    change: str
    job: str


class TimelapseButton(CallbackData, prefix="timelapse"):
    """Send the painting's timelapse (anyone in the chat may; see :mod:`bot.timelapses`)."""

    job: str


class DeleteButton(CallbackData, prefix="delete"):
    """Delete a result: its job, and the full-quality file posted under it (0: not known)."""

    job: str
    file_message: int = 0


def cancel_markup(job: Job) -> InlineKeyboardMarkup:
    data = CancelButton(job=job.id).pack()
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Cancel", callback_data=data)]]
    )


def result_markup(
    job: Job, file_message: int | None = None, *, timelapse: bool = False
) -> InlineKeyboardMarkup:
    """The re-roll buttons (Stronger, Softer, Keep colours, ...), Timelapse (when one was
    made) and Delete, which also removes ``file_message`` (the full-quality file) once it is
    known. Ids only."""
    rerolls = [
        InlineKeyboardButton(
            text=way.label(job.options),
            callback_data=RerollButton(change=way.key, job=job.id).pack(),
        )
        for way in rerolls_for(job.options)
    ]
    delete = DeleteButton(job=job.id, file_message=file_message or 0).pack()
    last = [InlineKeyboardButton(text="🗑️ Delete", callback_data=delete)]
    if timelapse:
        text = f"{replies.TIMELAPSE_EMOJI} {replies.TIMELAPSE_LABEL}"
        data = TimelapseButton(job=job.id).pack()
        last.insert(0, InlineKeyboardButton(text=text, callback_data=data))
    return InlineKeyboardMarkup(inline_keyboard=[rerolls, last])
