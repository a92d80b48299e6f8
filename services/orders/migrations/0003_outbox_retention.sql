-- What the relay prunes: events published longer ago than OUTBOX_RETENTION.
CREATE INDEX outbox_sent_time ON outbox (sent_time) WHERE sent_time IS NOT NULL;
