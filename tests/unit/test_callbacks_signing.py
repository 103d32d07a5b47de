"""Standard Webhooks signing: the spec's test vector and the reference verifier agree."""

import base64
import time
from collections.abc import Callable

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from adapters.callbacks import sign, webhook_headers
from core.deliveries import new_secret

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
BODY = b'{"type": "job.succeeded", "data": {"job_id": "j1"}}'


def test_the_spec_test_vector_is_reproduced() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_a_new_secret_is_prefixed_base64_of_at_least_24_random_bytes() -> None:
    # Given two fresh secrets
    first, second = new_secret(), new_secret()
    # Then each is whsec_ + base64 of 24..64 bytes, and they differ
    for secret in (first, second):
        assert secret.startswith("whsec_")
        assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) <= 64
    assert first != second


def test_headers_verify_with_the_reference_library() -> None:
    # Given headers signed now with a fresh secret
    secret = new_secret()
    headers = webhook_headers([secret], "msg_1", int(time.time()), BODY)
    # Then the unmodified reference verifier accepts them and returns the body
    assert Webhook(secret).verify(BODY, headers) == {"type": "job.succeeded",
                                                     "data": {"job_id": "j1"}}
    assert headers["webhook-id"] == "msg_1"
    assert headers["content-type"] == "application/json"


def test_during_rotation_both_secrets_verify() -> None:
    # Given headers signed with an old and a new secret
    old, new = new_secret(), new_secret()
    headers = webhook_headers([old, new], "msg_2", int(time.time()), BODY)
    # Then there is one signature per secret and a receiver holding either one verifies
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)


def _tamper_body(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body.replace(b"j1", b"j2"), headers


def _tamper_id(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {**headers, "webhook-id": "msg_other"}


def _tamper_timestamp(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)}


@pytest.mark.parametrize("tamper", [_tamper_body, _tamper_id, _tamper_timestamp],
                         ids=["body", "webhook-id", "webhook-timestamp"])
def test_a_tampered_callback_fails_the_verification_the_untouched_one_passes(
        tamper: Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]) -> None:
    # Given a signed callback that the reference verifier accepts as sent
    secret = new_secret()
    headers = webhook_headers([secret], "msg_3", int(time.time()), BODY)
    assert Webhook(secret).verify(BODY, headers)["data"] == {"job_id": "j1"}
    # When one signed part is changed
    body, changed = tamper(BODY, headers)
    # Then the same verifier refuses it
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(body, changed)


def test_another_secret_fails_the_verification_the_signing_one_passes() -> None:
    # Given a callback signed with one secret, which verifies with that secret
    secret = new_secret()
    headers = webhook_headers([secret], "msg_6", int(time.time()), BODY)
    Webhook(secret).verify(BODY, headers)
    # Then a receiver holding another secret refuses it
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(new_secret()).verify(BODY, headers)


def test_signing_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="at least one"):
        webhook_headers([], "msg_7", int(time.time()), BODY)
