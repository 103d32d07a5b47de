"""Secrets at rest: what a copy of the job store must not give away, sealed with Fernet.

Approval and resume tokens in events and the headers of tenants' HTTP tools are stored sealed
(`fernet:` and a Fernet token) and opened only where they are used or shown to their tenant.
The keys are `ORCHESTRATOR_SECRET_KEY`: the first seals, every one opens (`MultiFernet`), so a
key is rotated by putting a new one first and re-sealing (`orchestrator secrets rotate`).
A value without the prefix is one written before sealing began: it is read as it is.
"""

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from core.errors import ConfigError

SEALED = "fernet:"
KEY_HELP = ("set ORCHESTRATOR_SECRET_KEY to a Fernet key (`orchestrator secrets new-key` "
            "prints one; `make run` creates var/secret-key)")


def new_key() -> str:
    """A fresh Fernet key (32 random bytes, URL-safe base64)."""
    return Fernet.generate_key().decode()


def is_sealed(value: str) -> bool:
    return value.startswith(SEALED)


class Vault:
    """Seals and opens secrets with the configured keys: the first seals, every one opens."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ConfigError(f"no key to seal secrets with: {KEY_HELP}")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def seal(self, value: str) -> str:
        """The value encrypted with the first key."""
        return SEALED + self._fernet.encrypt(value.encode()).decode()

    def open(self, value: str) -> str:
        """The value a sealed one holds; a legacy plaintext value as it is."""
        if not is_sealed(value):
            return value
        try:
            return self._fernet.decrypt(value.removeprefix(SEALED).encode()).decode()
        except InvalidToken as exc:
            raise ConfigError("a stored secret opens with no ORCHESTRATOR_SECRET_KEY: the key "
                              "it was sealed with was removed before `orchestrator secrets "
                              "rotate` re-sealed it") from exc

    def reseal(self, value: str) -> str:
        """The value sealed with the first key (legacy plaintext sealed for the first time)."""
        if not is_sealed(value):
            return self.seal(value)
        return SEALED + self._fernet.rotate(value.removeprefix(SEALED).encode()).decode()

    def seal_values(self, mapping: dict[str, str]) -> dict[str, str]:
        """A mapping (headers) with each value sealed; the names stay readable."""
        return {name: self.seal(value) for name, value in mapping.items()}

    def open_values(self, mapping: dict[str, str]) -> dict[str, str]:
        return {name: self.open(value) for name, value in mapping.items()}
