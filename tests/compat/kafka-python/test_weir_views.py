"""Weir's own checks with kafka-python, run beside its integration tests
(tests/compat/kafka_python.sh copies this file into test/integration): a
tag-filtered view, created with CreateTopics and the configs
weir.view.source and weir.view.tags, read by a KafkaConsumer as an ordinary
topic; and a produce to the view refused.
"""

import os
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import InvalidRequestError, KafkaError


def bootstrap():
    return os.environ["KAFKA_URI"].split("://", 1)[1]


def test_a_view_serves_only_its_tags_at_the_source_offsets():
    name = "views-" + uuid.uuid4().hex[:8]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap())
    admin.create_topics([NewTopic(name, 1, 1)])
    admin.create_topics(
        [
            NewTopic(
                name + "-vip",
                -1,
                -1,
                topic_configs={"weir.view.source": name, "weir.view.tags": "VIP || GOLD"},
            )
        ]
    )
    expected = []
    for codec in (None, "gzip", "lz4", "zstd"):
        producer = KafkaProducer(bootstrap_servers=bootstrap(), compression_type=codec, linger_ms=50)
        sent = []
        for i, tag in enumerate(["VIP", "IRON", None, "GOLD", "IRON"]):
            headers = [("x", b"1"), ("x", b"2")]
            if tag:
                headers.append(("weir.tag", tag.encode()))
            value = f"{codec}-{i}".encode()
            sent.append((producer.send(name, value=value, partition=0, headers=headers), tag, value, headers))
        producer.flush()
        for future, tag, value, headers in sent:
            offset = future.get(timeout=30).offset
            if tag in ("VIP", "GOLD"):
                expected.append((offset, value, headers))
        producer.close()

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap(), enable_auto_commit=False, consumer_timeout_ms=5000
    )
    partition = TopicPartition(name + "-vip", 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    got = []
    for message in consumer:
        got.append((message.offset, message.value, list(message.headers)))
        if len(got) == len(expected):
            break
    end = consumer.end_offsets([partition])[partition]
    consumer.close()
    assert got == expected
    assert end == 20, "the view's offsets are the source's"


def test_a_produce_to_a_view_is_refused():
    name = "views-" + uuid.uuid4().hex[:8]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap())
    admin.create_topics([NewTopic(name, 1, 1)])
    admin.create_topics(
        [NewTopic(name + "-v", -1, -1, topic_configs={"weir.view.source": name, "weir.view.tags": "A"})]
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap(), retries=0)
    with pytest.raises(KafkaError) as refused:
        producer.send(name + "-v", value=b"x", partition=0).get(timeout=30)
    producer.close()
    assert isinstance(refused.value, InvalidRequestError), refused.value
