"""confluent-kafka's Producer and Consumer over SASL_SSL with SCRAM-SHA-512
against a `weir serve` of the test's own: a SASL_SSL listener serving TLS
from `weir cert dev`'s keystore, and a user made with `weir user create`
through the broker's PLAINTEXT listener. A wrong password is refused.

The `weir` binary is in WEIR_CLI (tests/compat/confluent_kafka.sh).
"""

import os
import subprocess
import tempfile
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

WEIR = os.environ["WEIR_CLI"]
START_S = 30
WAIT_S = 30


@pytest.fixture(scope="module")
def secured():
    """A broker with PLAINTEXT and SASL_SSL listeners, the dev CA, and alice."""
    with tempfile.TemporaryDirectory(prefix="weir-sasl-ssl-") as work:
        certs = os.path.join(work, "certs")
        subprocess.run([WEIR, "cert", "dev", "--dir", certs], check=True, capture_output=True)
        out = open(os.path.join(work, "broker.out"), "w+")
        err = open(os.path.join(work, "broker.err"), "w")
        broker = subprocess.Popen(
            [
                WEIR, "serve", "--data-dir", os.path.join(work, "data"),
                "--admin-listen", "none", "--default-partitions", "1",
                "--set", "listeners=PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
                "--set", f"ssl.keystore.location={os.path.join(certs, 'broker.pem')}",
                "--set", "sasl.enabled.mechanisms=SCRAM-SHA-512",
            ],
            stdout=out,
            stderr=err,
        )
        try:
            listeners = {}
            deadline = time.time() + START_S
            while "SASL_SSL" not in listeners or "PLAINTEXT" not in listeners:
                assert broker.poll() is None, "weir serve exited"
                assert time.time() < deadline, "weir serve printed no listeners"
                time.sleep(0.1)
                out.seek(0)
                for line in out.read().splitlines():
                    parts = line.split()
                    if len(parts) == 5 and parts[0] == "listener" and parts[2:4] == ["listening", "on"]:
                        listeners[parts[1]] = parts[4]
            created = subprocess.run(
                [WEIR, "--brokers", listeners["PLAINTEXT"], "user", "create", "alice",
                 "--password-stdin", "--mechanism", "SCRAM-SHA-512"],
                input="alice-secret\n", text=True, capture_output=True, timeout=WAIT_S,
            )
            assert created.returncode == 0, created.stderr
            yield listeners["SASL_SSL"], os.path.join(certs, "ca.crt")
        finally:
            broker.kill()
            broker.wait()


def config(address, ca, password):
    return {
        "bootstrap.servers": address,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": password,
        "ssl.ca.location": ca,
    }


def test_scram_sha512_over_sasl_ssl_produces_and_consumes(secured):
    address, ca = secured
    topic = f"secured-{uuid.uuid4().hex[:8]}"
    producer = Producer(config(address, ca, "alice-secret"))
    failures = []
    for i in range(20):
        producer.produce(topic, f"v{i}".encode(), on_delivery=lambda e, m: e and failures.append(e))
    assert producer.flush(WAIT_S) == 0
    assert failures == []

    consumer = Consumer({**config(address, ca, "alice-secret"), "group.id": f"g-{topic}",
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen = []
    deadline = time.time() + WAIT_S
    while len(seen) < 20 and time.time() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen.append(message.value().decode())
    consumer.close()
    assert seen == [f"v{i}" for i in range(20)]


def test_a_wrong_password_is_refused(secured):
    address, ca = secured
    errors = []
    producer = Producer({**config(address, ca, "wrong"), "error_cb": errors.append})
    producer.produce("refused", b"x")
    producer.flush(5)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
