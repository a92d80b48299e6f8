-- The catalog with its stock, and the reservations that hold stock for orders.
-- Stock moves between the three buckets of a product: reserving takes from
-- `available` into `reserved`, committing moves `reserved` to `sold`, releasing
-- gives `reserved` back to `available`. None of them ever goes below zero.

CREATE TABLE products (
    sku            TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL,
    price_currency TEXT NOT NULL CHECK (price_currency ~ '^[A-Z]{3}$'),
    price_minor    BIGINT NOT NULL CHECK (price_minor >= 0),
    available      BIGINT NOT NULL CHECK (available >= 0),
    reserved       BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    sold           BIGINT NOT NULL DEFAULT 0 CHECK (sold >= 0),
    update_time    TIMESTAMPTZ NOT NULL
);

-- The id is the caller's idempotency key (orders uses the order id). A reservation
-- without items is a release that arrived before its reservation (a tombstone).
CREATE TABLE reservations (
    id          TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'released')),
    create_time TIMESTAMPTZ NOT NULL,
    update_time TIMESTAMPTZ NOT NULL
);

CREATE TABLE reservation_items (
    reservation_id TEXT NOT NULL REFERENCES reservations (id),
    sku            TEXT NOT NULL REFERENCES products (sku),
    quantity       INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, sku)
);
