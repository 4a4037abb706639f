"""Weir's own checks with kafka-python, run beside its integration tests
(tests/compat/kafka_python.sh copies this file into test/integration):
group configs set, described and reset with KafkaAdminClient on the GROUP
config resource (IncrementalAlterConfigs and DescribeConfigs, as
kafka-configs.sh --entity-type groups sends them).
"""

import os
import uuid

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType


def bootstrap():
    return os.environ["KAFKA_URI"].split("://", 1)[1]


def describe(admin, group):
    resource = ConfigResource(ConfigResourceType.GROUP, group)
    return admin.describe_configs([resource], config_filter="all")["group"][group]


def test_group_configs_are_set_described_checked_and_reset():
    group = "cfg-" + uuid.uuid4().hex[:8]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap())
    result = admin.alter_configs(
        [
            ConfigResource(
                ConfigResourceType.GROUP,
                group,
                configs={
                    "share.delivery.count.limit": "3",
                    "weir.share.redelivery.backoff.ms": "1000,5000,10000",
                },
            )
        ]
    )
    assert result == {"group": {group: "OK"}}

    configs = describe(admin, group)
    limit = configs["share.delivery.count.limit"]
    assert (limit["value"], limit["config_source"]) == ("3", "DYNAMIC_GROUP_CONFIG")
    backoff = configs["weir.share.redelivery.backoff.ms"]
    assert backoff["value"] == "1000,5000,10000"
    lock = configs["share.record.lock.duration.ms"]
    assert (lock["value"], lock["config_source"]) == ("30000", "DEFAULT_CONFIG")
    reset = configs["share.auto.offset.reset"]
    assert (reset["value"], reset["config_source"]) == ("latest", "DEFAULT_CONFIG")

    # A value out of range is refused with INVALID_CONFIG and changes nothing.
    refused = admin.alter_configs(
        [ConfigResource(ConfigResourceType.GROUP, group, configs={"share.delivery.count.limit": "11"})]
    )
    assert "InvalidConfig" in refused["group"][group]
    # A name that is not a group config: the client's own check, then the broker's.
    with pytest.raises(ValueError):
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.GROUP, group, configs={"no.such.config": "1"})]
        )
    refused = admin.alter_configs(
        [ConfigResource(ConfigResourceType.GROUP, group, configs={"no.such.config": "1"})],
        raise_on_unknown=False,
    )
    assert "InvalidConfig" in refused["group"][group]
    assert describe(admin, group)["share.delivery.count.limit"]["value"] == "3"

    admin.reset_configs([ConfigResource(ConfigResourceType.GROUP, group, configs=["share.delivery.count.limit"])])
    limit = describe(admin, group)["share.delivery.count.limit"]
    assert (limit["value"], limit["config_source"]) == ("5", "DEFAULT_CONFIG")
    admin.close()
