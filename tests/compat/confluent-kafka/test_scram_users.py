"""SCRAM users through confluent-kafka's AdminClient
(AlterUserScramCredentials and DescribeUserScramCredentials, KIP-554)
against a real `weir serve`, and `weir user` seen from the same client.

librdkafka salts and hashes the password on the client side (PBKDF2 with
the mechanism's hash), as Kafka's own tools do; the broker keeps only
StoredKey and ServerKey. The broker is started by
tests/compat/confluent_kafka.sh; its address is in WEIR_BOOTSTRAP and the
`weir` binary in WEIR_CLI.
"""

import json
import os
import subprocess
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

BOOTSTRAP = os.environ["WEIR_BOOTSTRAP"]
WEIR = os.environ["WEIR_CLI"]
TIMEOUT_S = 30


# One client for the module: a client dropped while its futures are
# pending fails them ("handle destroyed").
ADMIN = AdminClient({"bootstrap.servers": BOOTSTRAP})


def admin():
    return ADMIN


def fresh(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def alter(alterations):
    return {user: f for user, f in admin().alter_user_scram_credentials(alterations).items()}


def described(user):
    return admin().describe_user_scram_credentials([user])[user].result(timeout=TIMEOUT_S)


def mechanisms(description):
    return sorted(
        (info.mechanism, info.iterations) for info in description.scram_credential_infos
    )


def error_code(future):
    with pytest.raises(KafkaException) as raised:
        future.result(timeout=TIMEOUT_S)
    return raised.value.args[0].code()


def test_a_user_is_created_described_and_deleted_mechanism_by_mechanism():
    user = fresh("alice")
    sha256 = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192)
    sha512 = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    for f in alter(
        [UserScramCredentialUpsertion(user, sha256, b"alice-secret", b"salt-of-alice")]
    ).values():
        f.result(timeout=TIMEOUT_S)
    for f in alter([UserScramCredentialUpsertion(user, sha512, b"alice-secret")]).values():
        f.result(timeout=TIMEOUT_S)
    assert mechanisms(described(user)) == [
        (ScramMechanism.SCRAM_SHA_256, 8192),
        (ScramMechanism.SCRAM_SHA_512, 4096),
    ]
    # Every user, as a null list asks for.
    everyone = admin().describe_user_scram_credentials().result(timeout=TIMEOUT_S)
    assert user in everyone

    for f in alter([UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_256)]).values():
        f.result(timeout=TIMEOUT_S)
    assert mechanisms(described(user)) == [(ScramMechanism.SCRAM_SHA_512, 4096)]
    for f in alter([UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)]).values():
        f.result(timeout=TIMEOUT_S)
    missing = admin().describe_user_scram_credentials([user])[user]
    assert error_code(missing) == KafkaError.RESOURCE_NOT_FOUND


def test_credentials_kafka_refuses_are_refused_with_its_codes():
    user = fresh("bob")
    too_few = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 1024)
    futures = alter([UserScramCredentialUpsertion(user, too_few, b"pw")])
    assert error_code(futures[user]) == KafkaError.UNACCEPTABLE_CREDENTIAL
    gone = alter([UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)])
    assert error_code(gone[user]) == KafkaError.RESOURCE_NOT_FOUND
    # One user altered twice in one request: the whole user is refused.
    twice = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    futures = alter(
        [
            UserScramCredentialUpsertion(user, twice, b"pw"),
            UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512),
        ]
    )
    assert error_code(futures[user]) == KafkaError.DUPLICATE_RESOURCE
    missing = admin().describe_user_scram_credentials([user])[user]
    assert error_code(missing) == KafkaError.RESOURCE_NOT_FOUND


def weir(*args, stdin=None):
    return subprocess.run(
        [WEIR, "--brokers", BOOTSTRAP, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def test_weir_user_creates_what_kafka_clients_describe_and_deletes_it():
    user = fresh("carol")
    created = weir("user", "create", user, "--password-stdin", "--iterations", "8192", stdin="s3cret\n")
    assert created.returncode == 0, created.stderr
    assert mechanisms(described(user)) == [(ScramMechanism.SCRAM_SHA_512, 8192)]

    listed = weir("user", "list", user, "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["users"] == [
        {"user": user, "credentials": [{"mechanism": "SCRAM-SHA-512", "iterations": 8192}]}
    ]
    # A password is never printed back.
    assert "s3cret" not in created.stdout + created.stderr + listed.stdout

    deleted = weir("user", "delete", user)
    assert deleted.returncode == 0, deleted.stderr
    again = weir("user", "delete", user)
    assert again.returncode == 1, again.stdout
    usage = weir("user", "create", user)
    assert usage.returncode == 2, "no password is a usage error"
