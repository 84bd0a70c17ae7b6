"""The Kafka mirror over TLS against a real broker with an SSL listener whose certificate a test
CA signed: with that CA (kafka.ssl_ca_file) every event is published; with a CA that did not
sign it nothing is, and the log says why."""
import json
import os

from kafka_broker import kafka_broker_factory  # noqa: F401  (fixture)
from outboxd_proc import wait_for
from test_kafka_mirror import _env, _prefix, _unpublished, _wait_published


def test_tls_with_the_right_ca_publishes_with_a_wrong_ca_nothing(
        kafka_broker_factory, test_certs, migrated_db, outboxd_factory, smtp_sink, tmp_path):  # noqa: F811
    pem = tmp_path / "broker.pem"  # Kafka's PEM keystore: the key, then the certificate chain
    with open(test_certs.server_key) as k, open(test_certs.server_cert) as c, open(test_certs.ca_cert) as ca:
        pem.write_text(k.read() + c.read() + ca.read())
    os.chmod(pem, 0o644)
    broker = kafka_broker_factory(partitions=1, tls=str(pem))
    prefix = _prefix()
    tls = {"OUTBOXD_KAFKA_BROKERS": f"127.0.0.1:{broker.tls_port}", "OUTBOXD_KAFKA_SECURITY_PROTOCOL": "ssl"}
    migrated_db.sql("INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) "
                    "SELECT 'order', 'k' || i, 'OrderPaid', jsonb_build_object('seq', i) FROM generate_series(1, 20) i")

    bad = outboxd_factory(smtp_sink.url, env={**_env(broker, prefix), **tls,
                                               "OUTBOXD_KAFKA_SSL_CA_FILE": test_certs.untrusted_cert}, name="bad")
    wait_for(lambda: "certificate verify failed" in bad.log_text(), timeout=30,
             what="the certificate verification failure in the log")
    assert _unpublished(migrated_db) == 20
    bad.kill()

    good = outboxd_factory(smtp_sink.url, env={**_env(broker, prefix), **tls,
                                                "OUTBOXD_KAFKA_SSL_CA_FILE": test_certs.ca_cert}, name="good")
    _wait_published(migrated_db, 20, timeout=60)
    assert good.stop(timeout=30) == 0
    seqs = sorted(json.loads(m["payload"])["seq"] for m in broker.consume(prefix + "order", timeout=60))
    assert seqs == list(range(1, 21))
