"""confluent-kafka's ShareConsumer (KIP-932, librdkafka's preview share
consumer) against a real `weir serve` with share groups on, and Weir's
dead-letter topics (KIP-1191) read back with confluent-kafka's Consumer.

The broker is started by tests/compat/confluent_kafka.sh; its address is in
WEIR_BOOTSTRAP.
"""

import os
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import AcknowledgeType, Consumer, Producer, ShareConsumer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

BOOTSTRAP = os.environ["WEIR_BOOTSTRAP"]
WAIT_S = 60


def fresh(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(name, partitions=1):
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)


def set_group_configs(group, configs):
    """Set `group`'s configs (IncrementalAlterConfigs on the GROUP resource),
    starting its share-partitions at the log start, so records produced
    before its consumers join are delivered."""
    configs = {"share.auto.offset.reset": "earliest", **configs}
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    entries = [
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
        for k, v in configs.items()
    ]
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def produce(topic, values):
    p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all"})
    for v in values:
        p.produce(topic, value=v.encode(), partition=0)
    assert p.flush(30) == 0


def share_consumer(group, topic, explicit=False):
    config = {"bootstrap.servers": BOOTSTRAP, "group.id": group}
    if explicit:
        config["share.acknowledgement.mode"] = "explicit"
    c = ShareConsumer(config)
    c.subscribe([topic])
    return c


def records(batch):
    out = []
    for m in batch or []:
        assert m.error() is None, m.error()
        out.append(m)
    return out


def dead_letters(topic, n):
    """The first `n` records of the dead-letter topic `topic`, as
    {offset header: {header: value}} with the records' values."""
    c = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": fresh("dlq-reader"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "topic.metadata.refresh.interval.ms": 500,
        }
    )
    c.subscribe([topic])
    found = []
    deadline = time.time() + WAIT_S
    try:
        while len(found) < n:
            assert time.time() < deadline, f"{topic}: only {found}"
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            headers = {k: (v.decode() if v is not None else None) for k, v in m.headers() or []}
            found.append((headers, m.value()))
    finally:
        c.close()
    return found


def test_two_share_consumers_on_one_partition_get_distinct_records_and_together_all():
    topic, group = fresh("shared"), fresh("workers")
    create_topic(topic)
    set_group_configs(group, {})
    a, b = share_consumer(group, topic), share_consumer(group, topic)
    try:
        values = [f"r{i}" for i in range(200)]
        produce(topic, values)
        got = {"a": [], "b": []}
        deadline = time.time() + WAIT_S
        while len(got["a"]) + len(got["b"]) < len(values):
            assert time.time() < deadline, f"only {len(got['a'])} + {len(got['b'])}"
            for name, c in (("a", a), ("b", b)):
                # Implicit acknowledgement: the next poll accepts these.
                got[name] += [m.value().decode() for m in records(c.poll(0.2))]
        both = got["a"] + got["b"]
        assert len(both) == len(set(both)), "a record went to both consumers"
        assert sorted(both) == sorted(values)
        print(f"a got {len(got['a'])}, b got {len(got['b'])}")
    finally:
        a.close()
        b.close()


def test_a_rejected_record_lands_once_in_the_groups_dead_letter_topic():
    topic, group = fresh("orders"), fresh("orders-workers")
    create_topic(topic)
    set_group_configs(group, {})
    c = share_consumer(group, topic, explicit=True)
    try:
        produce(topic, ["good", "poison", "good-too"])
        seen = []
        deadline = time.time() + WAIT_S
        while len(seen) < 3:
            assert time.time() < deadline, f"only {seen}"
            for m in records(c.poll(0.5)):
                seen.append(m.offset())
                bad = m.value() == b"poison"
                c.acknowledge(m, AcknowledgeType.REJECT if bad else AcknowledgeType.ACCEPT)
            c.commit_sync()
    finally:
        c.close()
    [(headers, value)] = dead_letters(f"dlq.{group}", 1)
    assert value is None
    assert headers == {
        "__dlq.errors.topic": topic,
        "__dlq.errors.partition": "0",
        "__dlq.errors.offset": "1",
        "__dlq.errors.group": group,
        "__dlq.errors.delivery.count": "1",
        "__dlq.errors.message": "Offset rejected by client.",
    }


def test_a_record_released_to_the_groups_delivery_limit_is_dead_lettered_with_its_copy():
    topic, group = fresh("jobs"), fresh("runners")
    create_topic(topic)
    set_group_configs(
        group,
        {
            "share.delivery.count.limit": "2",
            "errors.deadletterqueue.copy.record.enable": "true",
        },
    )
    c = share_consumer(group, topic, explicit=True)
    try:
        produce(topic, ["flaky"])
        counts = []
        deadline = time.time() + WAIT_S
        while len(counts) < 2:
            assert time.time() < deadline, f"deliveries {counts}"
            for m in records(c.poll(0.5)):
                counts.append(m.delivery_count())
                c.acknowledge(m, AcknowledgeType.RELEASE)
            c.commit_sync()
        assert counts == [1, 2]
    finally:
        c.close()
    [(headers, value)] = dead_letters(f"dlq.{group}", 1)
    assert value == b"flaky"
    assert headers["__dlq.errors.delivery.count"] == "2"
    assert headers["__dlq.errors.message"] == "Offset delivery count exceeded the threshold."


HOLD_AND_DIE = """
import os, sys, time
from confluent_kafka import ShareConsumer
c = ShareConsumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
                   "share.acknowledgement.mode": "explicit"})
c.subscribe([sys.argv[3]])
deadline = time.time() + 60
held = 0
while held < int(sys.argv[4]) and time.time() < deadline:
    held += len([m for m in c.poll(0.5) or [] if m.error() is None])
print(held, flush=True)
os._exit(0)  # killed while holding the locks: no acknowledgement, no leave
"""


def test_records_of_a_killed_consumer_come_back_after_their_locks_with_the_count_raised():
    topic, group = fresh("tasks"), fresh("takers")
    create_topic(topic)
    set_group_configs(group, {"share.record.lock.duration.ms": "1000"})
    produce(topic, [f"t{i}" for i in range(5)])
    dead = subprocess.run(
        [sys.executable, "-c", HOLD_AND_DIE, BOOTSTRAP, group, topic, "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dead.stdout.strip() == "5", dead.stderr
    survivor = share_consumer(group, topic, explicit=True)
    try:
        again = {}
        deadline = time.time() + WAIT_S
        while len(again) < 5:
            assert time.time() < deadline, f"only {again}"
            for m in records(survivor.poll(0.5)):
                again[m.offset()] = m.delivery_count()
                survivor.acknowledge(m, AcknowledgeType.ACCEPT)
            survivor.commit_sync()
        assert again == {o: 2 for o in range(5)}
    finally:
        survivor.close()
