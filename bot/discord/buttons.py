"""The persistent buttons on Discord: what every one of them does with a press, and the shape of
the ones that carry a single id.

A persistent button outlives the process that posted it: its ``custom_id`` holds all it needs
(ids only; the state it acts on lives in the store) and discord.py rebuilds the button from that
string when it is pressed, after a restart too. :class:`ButtonPress` sends the press to
``pressed`` and anything it raises to the client's one error reply. :class:`IdButton` is a
button whose ``custom_id`` is ``atelier:<action>:<id>`` (``atelier:<action>:<kind>:<id>`` for
one that comes in kinds, the re-rolls): a concrete one is its action, its look and its
``pressed``. Those strings are on messages already posted, so they never change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Final, Self

import discord

from bot.discord.client import AtelierDiscord

JOB_ID: Final = r"[A-Za-z0-9_-]{1,40}"  # what a job id in a custom_id may be
ENTRY_ID: Final = r"\d{1,18}"  # a challenge entry's id


class ButtonPress:
    """The base of every persistent button: the press goes to :meth:`pressed`, and anything it
    raises to the client's one error reply. Buttons carry ids only; their state is stored."""

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        assert isinstance(client, AtelierDiscord)
        try:
            await self.pressed(interaction, client)
        except Exception as error:
            await client.report_error(interaction, error)

    async def pressed(self, interaction: discord.Interaction[Any], client: AtelierDiscord) -> None:
        raise NotImplementedError


class IdButton(
    ButtonPress,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"atelier:(?P<action>[a-z]+):(?:(?P<kind>[a-z_]+):)?(?P<id>[^:]+)",
):
    """A persistent button that carries one id (a job's, an entry's), kept as text in
    :attr:`carried`. A concrete button names its action (and, for one that comes in kinds,
    the kinds) when it is declared, sets its look and says what a press does::

        class CancelButton(IdButton, action="cancel"):
            LABEL, EMOJI = "Cancel", "✖️"

            async def pressed(self, interaction, client): ...

    ``id_pattern`` is what an id may be (a job id unless said otherwise). The class's own
    template only describes the family: it is never registered.
    """

    LABEL: ClassVar[str] = ""
    EMOJI: ClassVar[str | None] = None
    STYLE: ClassVar[discord.ButtonStyle] = discord.ButtonStyle.secondary
    ACTION: ClassVar[str]

    def __init_subclass__(
        cls, *, action: str, id_pattern: str = JOB_ID, kinds: Sequence[str] = ()
    ) -> None:
        kind = f"(?P<kind>{'|'.join(kinds)}):" if kinds else ""
        super().__init_subclass__(template=rf"atelier:{action}:{kind}(?P<id>{id_pattern})")
        cls.ACTION = action

    def __init__(
        self,
        carried: str | int,
        kind: str | None = None,
        *,
        label: str | None = None,
        emoji: str | None = None,
    ) -> None:
        parts = ("atelier", self.ACTION, *((kind,) if kind else ()), str(carried))
        super().__init__(
            discord.ui.Button(
                label=label or self.LABEL,
                emoji=emoji or self.EMOJI,
                style=self.STYLE,
                custom_id=":".join(parts),
            )
        )
        self.carried = str(carried)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> Self:
        kind = match.groupdict().get("kind")
        return cls(match["id"]) if kind is None else cls(match["id"], kind)
