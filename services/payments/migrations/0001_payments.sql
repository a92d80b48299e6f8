-- Every charge attempt, captured or declined, and its refund.

CREATE TABLE payments (
    -- Creation order: the page key of ListPayments.
    position      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    -- The caller's idempotency key: one payment per key, whoever races.
    request_id    TEXT NOT NULL UNIQUE,
    order_id      TEXT NOT NULL,
    customer_id   TEXT NOT NULL,
    currency_code TEXT NOT NULL CHECK (currency_code ~ '^[A-Z]{3}$'),
    amount_minor  BIGINT NOT NULL CHECK (amount_minor > 0),
    status        TEXT NOT NULL CHECK (status IN ('captured', 'declined', 'refunded')),
    status_reason TEXT NOT NULL,
    create_time   TIMESTAMPTZ NOT NULL,
    update_time   TIMESTAMPTZ NOT NULL
);

-- ListPayments of one order, in creation order.
CREATE INDEX payments_order_id_position ON payments (order_id, position);
