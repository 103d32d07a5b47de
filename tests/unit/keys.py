"""The one secret key the unit tests seal with (tenants, tokens, tool headers)."""

from core.vault import Vault, new_key

VAULT = Vault([new_key()])
