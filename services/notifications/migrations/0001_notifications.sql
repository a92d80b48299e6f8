-- Notifications made from order events, and the events already processed.

CREATE TABLE notifications (
    -- Creation order: the page key of ListNotifications (newest first).
    position    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    customer_id TEXT NOT NULL,
    order_id    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    message     TEXT NOT NULL,
    create_time TIMESTAMPTZ NOT NULL
);

-- ListNotifications: a customer's notifications, newest first.
CREATE INDEX notifications_customer_id_position ON notifications (customer_id, position);

-- The consumer's de-duplication: an event redelivered (at least once), or delivered to
-- two consumers at once, makes one notification. Written in the notification's
-- transaction.
CREATE TABLE processed_events (
    event_id     TEXT PRIMARY KEY,
    process_time TIMESTAMPTZ NOT NULL DEFAULT now()
);
