"""Slash-command options as a member fills them in: Discord's checks against the synced command, and ``resolved``.

Values Discord itself would refuse (wrong type, not one of the choices, out of range or length, a channel of a
type the option does not take, a missing required option, an unknown option or subcommand) raise ``ApiError``
400 ``{"code": 50035, "message": "Invalid Form Body", "errors": {"data": {"options": ...}}}``. Naming a user,
role or channel the fake does not have is a mistake in the test, not something Discord answers: an
AssertionError. A command that was never synced is sent as given, with types guessed from the Python values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .models import FakeGuild, FakeRole, FakeThread, FakeUser
from .payloads import member_json, member_permissions, member_role_json, named_role_json, role_json, user_json
from .validation import FormErrors

if TYPE_CHECKING:
    from .server import FakeDiscord

SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11
GUESSED_TYPES: dict[type, int] = {bool: BOOLEAN, int: INTEGER, float: NUMBER, str: STRING}  # bool first: an int
MAX_SAFE_INTEGER = 2**53  # Discord's integer options are limited to +-2^53


def _choices(values: list[Any]) -> str:
    return f"Value must be one of {tuple(values)!r}."


class OptionBuilder:
    """Builds ``data.options`` (and ``data.resolved``) of one chat-input interaction."""

    def __init__(self, fake: FakeDiscord, guild: FakeGuild | None, user: FakeUser, channel_id: int) -> None:
        self.fake = fake
        self.guild = guild
        self.user = user
        self.channel_id = channel_id
        self.resolved: dict[str, dict[str, Any]] = {}
        self.errors = FormErrors()

    # ----- the command's shape -----

    def descend(self, cmd: dict[str, Any] | None, path: list[str]) -> tuple[list[dict[str, Any]] | None, list[int]]:
        """The option specs under ``path`` ("group sub") and the types of its levels; None if not synced."""
        assert len(path) <= 2, f"fake Discord: at most a group and a subcommand, not {path}"
        kinds = [SUB_COMMAND_GROUP, SUB_COMMAND][2 - len(path) :]
        if cmd is None:
            return None, kinds
        spec: list[dict[str, Any]] = cmd.get("options") or []
        where: list[str | int] = ["data", "options"]
        kinds = []
        for part in path:
            subs = [o for o in spec if o.get("type") in (SUB_COMMAND, SUB_COMMAND_GROUP)]
            chosen = next((o for o in subs if o["name"] == part), None)
            if chosen is None:
                self.errors.fail([*where, 0, "name"], "BASE_TYPE_CHOICES", _choices([o["name"] for o in subs]))
            kinds.append(int(chosen["type"]))
            spec = chosen.get("options") or []
            where = [*where, 0, "options"]
        if any(o.get("type") in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in spec):
            names = [o["name"] for o in spec]
            self.errors.add(where, "BASE_TYPE_REQUIRED", f"A subcommand is required, one of {tuple(names)!r}.")
        return spec, kinds

    def build(
        self,
        spec: list[dict[str, Any]] | None,
        values: dict[str, object],
        *,
        depth: int,
        attachments: list[str],
        focused: str | None,
    ) -> list[dict[str, Any]]:
        """The options list at ``depth`` subcommand levels; ``attachments`` names options the caller adds."""
        where: list[str | int] = ["data", "options"]
        for _ in range(depth):
            where = [*where, 0, "options"]
        by_name = {o["name"]: o for o in spec or []}
        out: list[dict[str, Any]] = []
        for index, (name, value) in enumerate(values.items()):
            at = [*where, index]
            option = by_name.get(name)
            if spec is not None and option is None:
                self.errors.add([*at, "name"], "BASE_TYPE_CHOICES", _choices(list(by_name)))
                continue
            otype = int(option["type"]) if option is not None else self._guess(value)
            if name == focused:  # autocomplete sends whatever has been typed so far, unchecked
                out.append({"name": name, "type": otype, "value": value, "focused": True})
                continue
            converted = self._value(otype, value, option or {}, [*at, "value"])
            if converted is not None:
                out.append({"name": name, "type": otype, "value": converted})
        for name in attachments:
            if spec is not None and by_name.get(name, {}).get("type") != ATTACHMENT:
                self.errors.add(where, "BASE_TYPE_CHOICES", f"{name!r} is not an attachment option.")
        if spec is not None and focused is None:
            given = {*values, *attachments}
            for option in spec:
                if option.get("required") and option["name"] not in given:
                    self.errors.add(where, "BASE_TYPE_REQUIRED", f"Option {option['name']!r} is required.")
        return out

    @staticmethod
    def _guess(value: object) -> int:
        if isinstance(value, FakeUser):
            return USER
        if isinstance(value, FakeRole):
            return ROLE
        if isinstance(value, FakeThread):
            return CHANNEL
        return GUESSED_TYPES.get(type(value), STRING)

    # ----- one value -----

    def _value(self, otype: int, value: object, option: dict[str, Any], at: list[str | int]) -> object | None:
        if otype == STRING:
            if not isinstance(value, str):
                self.errors.add(at, "BASE_TYPE_STRING", "Must be a string.")
                return None
            low, high = option.get("min_length", 0), option.get("max_length", 6000)
            if not low <= len(value) <= high:
                self.errors.add(at, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")
        elif otype in (INTEGER, NUMBER):
            kind = "int" if otype == INTEGER else "float"
            ok = isinstance(value, int) if otype == INTEGER else isinstance(value, int | float)
            if isinstance(value, bool) or not ok:
                self.errors.add(at, "NUMBER_TYPE_COERCE", f'Value "{value}" is not {kind}.')
                return None
            assert isinstance(value, int | float)
            low, high = option.get("min_value", -MAX_SAFE_INTEGER), option.get("max_value", MAX_SAFE_INTEGER)
            if value < low:
                self.errors.add(at, "NUMBER_TYPE_MIN", f"{kind} value should be greater than or equal to {low}.")
            elif value > high:
                self.errors.add(at, "NUMBER_TYPE_MAX", f"{kind} value should be less than or equal to {high}.")
        elif otype == BOOLEAN:
            if not isinstance(value, bool):
                self.errors.add(at, "BASE_TYPE_BOOLEAN", "Must be either true or false.")
                return None
        elif otype in (USER, CHANNEL, ROLE, MENTIONABLE):
            return self._snowflake(otype, value, option, at)
        else:
            raise AssertionError(f"fake Discord: pass attachment options with attachments=, not {value!r}")
        choices = [c["value"] for c in option.get("choices") or []]
        if choices and value not in choices:
            self.errors.add(at, "BASE_TYPE_CHOICES", _choices(choices))
        return value

    def _snowflake(self, otype: int, value: object, option: dict[str, Any], at: list[str | int]) -> str | None:
        """A user, channel, role or mentionable: the value is the id; the object goes into ``resolved``."""
        if isinstance(value, FakeUser | FakeRole | FakeThread):
            target = value.id
        elif isinstance(value, int) and not isinstance(value, bool):
            target = value
        elif isinstance(value, str) and value.isdigit():
            target = int(value)
        else:
            self.errors.add(at, "NUMBER_TYPE_COERCE", f'Value "{value}" is not snowflake.')
            return None
        if otype == CHANNEL:
            self._resolve_channel(target, option, at)
        elif otype == ROLE or (otype == MENTIONABLE and (isinstance(value, FakeRole) or target not in self.fake.users)):
            self._resolve_role(target)
        else:
            self._resolve_user(target)
        return str(target)

    def _resolve_user(self, user_id: int) -> None:
        user = self.fake.users.get(user_id)
        assert user is not None, f"fake Discord: no user {user_id}"
        self.resolved.setdefault("users", {})[str(user_id)] = user_json(user)
        member = self.guild.members.get(user_id) if self.guild is not None else None
        if member is not None and self.guild is not None:  # in a guild Discord resolves the member (without user)
            permissions = member_permissions(self.guild, user_id)
            data = member_json(member, with_user=False, permissions=permissions)
            self.resolved.setdefault("members", {})[str(user_id)] = data

    def _resolve_role(self, role_id: int) -> None:
        guild = self.guild
        assert guild is not None, "fake Discord: role options exist only in guilds"
        if role_id == guild.id:
            data = role_json(guild.id, "@everyone", guild.everyone_permissions, 0)
        elif role_id in guild.roles:
            data = named_role_json(guild.roles[role_id])
        else:
            member = next((m for m in guild.members.values() if m.role_id == role_id), None)
            assert member is not None, f"fake Discord: no role {role_id} in {guild.name}"
            data = member_role_json(member)
        self.resolved.setdefault("roles", {})[str(role_id)] = data

    def _resolve_channel(self, channel_id: int, option: dict[str, Any], at: list[str | int]) -> None:
        fake = self.fake
        channel = fake.channel_payload(channel_id)
        assert channel is not None and not fake.is_gone(channel_id), f"fake Discord: no channel {channel_id}"
        assert self.guild is not None and fake.guild_of(channel_id) is self.guild, (
            f"fake Discord: channel {channel_id} is not in the guild of the interaction"
        )
        allowed = option.get("channel_types")
        if allowed and channel["type"] not in allowed:
            self.errors.add(at, "BASE_TYPE_CHOICES", f"Channel type must be one of {tuple(allowed)!r}.")
            return
        # Discord's resolved channel carries the invoking member's permissions in it.
        permissions = member_permissions(self.guild, self.user.id)
        self.resolved.setdefault("channels", {})[str(channel_id)] = {**channel, "permissions": str(permissions)}
