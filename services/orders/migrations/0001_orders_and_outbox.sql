-- Orders, their lines, and the outbox of the events their state changes publish.

CREATE TABLE orders (
    -- Creation order: the page key of ListOrders (newest first).
    position      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    -- The caller's idempotency key: one order per key, whoever races.
    request_id    TEXT NOT NULL UNIQUE,
    customer_id   TEXT NOT NULL,
    card_token    TEXT NOT NULL,
    currency_code TEXT NOT NULL CHECK (currency_code ~ '^[A-Z]{3}$'),
    total_minor   BIGINT NOT NULL CHECK (total_minor >= 0),
    status        TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'rejected', 'failed')),
    -- Why a rejected or failed order ended so; empty otherwise.
    status_reason TEXT NOT NULL,
    payment_id    TEXT,
    create_time   TIMESTAMPTZ NOT NULL,
    update_time   TIMESTAMPTZ NOT NULL
);

-- ListOrders: a customer's orders, newest first.
CREATE INDEX orders_customer_id_position ON orders (customer_id, position);

CREATE TABLE order_lines (
    order_id      TEXT NOT NULL REFERENCES orders (id),
    -- The line's place in the caller's order.
    line_no       INTEGER NOT NULL CHECK (line_no >= 0),
    sku           TEXT NOT NULL,
    quantity      INTEGER NOT NULL CHECK (quantity > 0),
    unit_currency TEXT NOT NULL CHECK (unit_currency ~ '^[A-Z]{3}$'),
    unit_minor    BIGINT NOT NULL CHECK (unit_minor >= 0),
    PRIMARY KEY (order_id, line_no)
);

-- The transactional outbox: each event is written in the transaction that changes the
-- order's state, and the relay publishes it afterwards (at least once), in position
-- order per order, then sets sent_time.
CREATE TABLE outbox (
    position      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The broker de-duplicates on it, and so do consumers.
    event_id      TEXT NOT NULL UNIQUE,
    order_id      TEXT NOT NULL REFERENCES orders (id),
    subject       TEXT NOT NULL,
    -- Message headers as parallel arrays: the W3C trace context of the saga that wrote it.
    header_names  TEXT[] NOT NULL,
    header_values TEXT[] NOT NULL,
    payload       BYTEA NOT NULL,
    create_time   TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_time     TIMESTAMPTZ,
    CHECK (cardinality(header_names) = cardinality(header_values))
);

-- What the relay looks for: pending events in order, and whether an order has an
-- earlier pending one.
CREATE INDEX outbox_pending ON outbox (position) WHERE sent_time IS NULL;
CREATE INDEX outbox_pending_order_id ON outbox (order_id, position) WHERE sent_time IS NULL;
